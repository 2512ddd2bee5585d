# Shortcuts for developers; the README's commands are the scripts themselves.
.PHONY: deps test demo lab-up lab-down lab-status protos lint

deps:
	scripts/deps
test:
	scripts/test
demo:
	scripts/demo
lab-up:
	scripts/deps && .venv/bin/python tests/integration/lab.py up
lab-down:
	.venv/bin/python tests/integration/lab.py down
lab-status:
	.venv/bin/python tests/integration/lab.py status
protos:
	protos/generate.sh
lint:
	.venv/bin/ruff check announcer tests && .venv/bin/mypy

.PHONY: bench
bench:
	scripts/bench
