"""protos/gobgp_v3.proto and gobgp_v4.proto are faithful subsets of GoBGP's APIs; code is fresh.

Every test runs for both API versions. The upstream protos come from Debian's
golang-github-osrg-gobgp-dev: 3.10 from bookworm (installed in CI), 4.8.0 from sid
(unpacked under .cache/gobgp4 by scripts/fetch-gobgp4, which scripts/deps runs).
These tests must fail, not skip, if either is missing.
"""

from __future__ import annotations

import importlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from tests.support.gobgpd_proc import GOBGP4_ROOT

REPO = Path(__file__).resolve().parents[2]
GOOGLE_INCLUDE = str(importlib.resources.files("grpc_tools") / "_proto")
GOCODE = "usr/share/gocode/src/github.com/osrg/gobgp"


@dataclass(frozen=True)
class Api:
    """One API version: our proto, upstream's, and what ours must declare."""

    version: int
    ours: Path
    upstream_include: Path  # the -I directory upstream's imports are relative to
    upstream_files: tuple[str, ...]
    package: str
    service: str
    rpcs: frozenset[str]
    hint: str  # how to get upstream's protos

    @property
    def generated_module(self) -> str:
        return f"announcer._proto.gobgp_v{self.version}_pb2"


APIS = {
    3: Api(
        version=3,
        ours=REPO / "protos" / "gobgp_v3.proto",
        upstream_include=Path("/") / GOCODE / "api",
        upstream_files=("gobgp.proto", "attribute.proto", "capability.proto"),
        package="apipb",
        service="GobgpApi",
        rpcs=frozenset(
            {
                "GetBgp",
                "AddPath",
                "DeletePath",
                "AddPathStream",
                "ListPath",
                "ListPeer",
                "EnablePeer",
                "DisablePeer",
                "WatchEvent",
            }
        ),
        hint="apt-get install golang-github-osrg-gobgp-dev",
    ),
    4: Api(
        version=4,
        ours=REPO / "protos" / "gobgp_v4.proto",
        upstream_include=GOBGP4_ROOT / GOCODE / "proto",
        upstream_files=tuple(
            f"api/{name}.proto"
            for name in ("gobgp", "attribute", "capability", "common", "extcom", "nlri")
        ),
        package="api",
        service="GoBgpService",
        # Only what the adapter binds: no AddPath, and no DeletePath at all.
        rpcs=frozenset(
            {
                "GetBgp",
                "AddPathStream",
                "ListPath",
                "ListPeer",
                "EnablePeer",
                "DisablePeer",
                "WatchEvent",
            }
        ),
        hint="run scripts/fetch-gobgp4",
    ),
}

FDP = descriptor_pb2.FieldDescriptorProto
FileSet = descriptor_pb2.FileDescriptorSet


def compile_protos(include: Path, files: list[str], out: Path) -> FileSet:
    """Run grpc_tools' bundled protoc and return the FileDescriptorSet (imports included)."""
    args = [
        "protoc",
        f"-I{include}",
        f"-I{GOOGLE_INCLUDE}",
        f"--descriptor_set_out={out}",
        "--include_imports",
        *files,
    ]
    assert protoc.main(args) == 0, f"protoc failed: {args}"
    return FileSet.FromString(out.read_bytes())


@pytest.fixture(scope="module", params=sorted(APIS), ids=lambda v: f"v{v}")
def api(request: pytest.FixtureRequest) -> Api:
    return APIS[request.param]


@pytest.fixture(scope="module")
def upstream(api: Api, tmp_path_factory: pytest.TempPathFactory) -> FileSet:
    missing = [f for f in api.upstream_files if not (api.upstream_include / f).is_file()]
    assert not missing, f"upstream {api.version}.x protos missing ({api.hint}): {missing}"
    out = tmp_path_factory.mktemp("upstream") / "upstream.pb"
    return compile_protos(api.upstream_include, list(api.upstream_files), out)


@pytest.fixture(scope="module")
def ours(api: Api, tmp_path_factory: pytest.TempPathFactory) -> FileSet:
    out = tmp_path_factory.mktemp("ours") / "ours.pb"
    return compile_protos(api.ours.parent, [api.ours.name], out)


def our_file(files: FileSet, api: Api) -> descriptor_pb2.FileDescriptorProto:
    (f,) = [f for f in files.file if f.name == api.ours.name]
    return f


# ------------------------------------------------------------- comparison


def index(
    files: FileSet,
) -> tuple[
    dict[str, descriptor_pb2.DescriptorProto],
    dict[str, descriptor_pb2.EnumDescriptorProto],
    dict[str, descriptor_pb2.ServiceDescriptorProto],
]:
    """Every message (nested too), enum and service of a descriptor set by full name."""
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
    services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}

    def walk(
        prefix: str,
        msgs: list[descriptor_pb2.DescriptorProto],
        ens: list[descriptor_pb2.EnumDescriptorProto],
    ) -> None:
        for e in ens:
            enums[f"{prefix}.{e.name}"] = e
        for m in msgs:
            name = f"{prefix}.{m.name}"
            messages[name] = m
            walk(name, list(m.nested_type), list(m.enum_type))

    for f in files:
        walk(f.package, list(f.message_type), list(f.enum_type))
        for s in f.service:
            services[f"{f.package}.{s.name}"] = s
    return messages, enums, services


def field_signature(
    msg: descriptor_pb2.DescriptorProto, f: descriptor_pb2.FieldDescriptorProto
) -> tuple[object, ...]:
    oneof = msg.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None
    return (
        f.name,
        f.number,
        FDP.Type.Name(f.type),
        FDP.Label.Name(f.label),
        f.type_name,
        oneof,
        f.proto3_optional,
    )


def differences(
    ours: list[descriptor_pb2.FileDescriptorProto],
    upstream: list[descriptor_pb2.FileDescriptorProto],
) -> list[str]:
    """Every way `ours` is not a subset of `upstream`; empty when it is."""
    up_msgs, up_enums, up_services = index(upstream)
    our_msgs, our_enums, our_services = index(ours)
    problems: list[str] = []
    for name, msg in our_msgs.items():
        up = up_msgs.get(name)
        if up is None:
            problems.append(f"message {name}: not in upstream")
            continue
        up_fields = {f.number: f for f in up.field}
        seen_names: set[str] = set()
        for f in msg.field:
            seen_names.add(f.name)
            uf = up_fields.get(f.number)
            if uf is None:
                problems.append(f"field {name}.{f.name} = {f.number}: no such number upstream")
            elif field_signature(msg, f) != field_signature(up, uf):
                problems.append(
                    f"field {name}.{f.name}: ours {field_signature(msg, f)} "
                    f"!= upstream {field_signature(up, uf)}"
                )
    for name, enum in our_enums.items():
        up_enum = up_enums.get(name)
        if up_enum is None:
            problems.append(f"enum {name}: not in upstream")
            continue
        mine = [(v.name, v.number) for v in enum.value]
        theirs = [(v.name, v.number) for v in up_enum.value]
        if sorted(mine) != sorted(theirs):
            problems.append(f"enum {name}: ours {mine} != upstream {theirs}")
    for name, service in our_services.items():
        up_service = up_services.get(name)
        if up_service is None:
            problems.append(f"service {name}: not in upstream")
            continue
        up_methods = {m.name: m for m in up_service.method}
        for m in service.method:
            um = up_methods.get(m.name)
            sig = (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
            if um is None:
                problems.append(f"rpc {name}.{m.name}: not in upstream")
            elif sig != (um.input_type, um.output_type, um.client_streaming, um.server_streaming):
                problems.append(
                    f"rpc {name}.{m.name}: ours {sig} != upstream "
                    f"{(um.input_type, um.output_type, um.client_streaming, um.server_streaming)}"
                )
    return problems


def test_ours_is_a_subset_of_upstream(api: Api, ours: FileSet, upstream: FileSet) -> None:
    mine = our_file(ours, api)
    theirs = [f for f in upstream.file if f.package == api.package]
    assert {f.name for f in theirs} == set(api.upstream_files)
    assert differences([mine], theirs) == []


def test_declares_what_the_adapter_uses(api: Api, ours: FileSet) -> None:
    mine = our_file(ours, api)
    assert mine.package == api.package
    assert mine.syntax == "proto3"
    # One self-contained file: the generated module imports only google.protobuf.
    assert all(d.startswith("google/protobuf/") for d in mine.dependency), list(mine.dependency)
    (service,) = mine.service
    assert service.name == api.service
    assert {m.name for m in service.method} == api.rpcs


def test_checker_catches_a_wrong_number(api: Api, ours: FileSet, upstream: FileSet) -> None:
    """The comparison itself is not vacuous: a renumbered field, enum value or rpc fails it."""
    theirs = [f for f in upstream.file if f.package == api.package]

    def mutated(change: str) -> descriptor_pb2.FileDescriptorProto:
        f = descriptor_pb2.FileDescriptorProto()
        f.CopyFrom(our_file(ours, api))
        msgs = {m.name: m for m in f.message_type}
        if change == "field":
            next(x for x in msgs["Path"].field if x.name == "family").number = 6
        elif change == "type":
            next(x for x in msgs["Global"].field if x.name == "listen_port").type = FDP.TYPE_UINT32
        elif change == "nested_enum":
            msgs["PeerState"].enum_type[0].value.pop()
        elif change == "enum":
            next(e for e in f.enum_type if e.name == "TableType").value[0].number = 1
        elif change == "extra":
            f.message_type.add(name="NotUpstream")
        elif change == "rpc":
            next(m for m in f.service[0].method if m.name == "ListPath").server_streaming = False
        elif change == "oneof":
            event = next(x for x in msgs["WatchEventResponse"].field if x.name == "peer")
            event.ClearField("oneof_index")
        elif change == "bind_to_device":  # 12 in 3.x, 11 in 4.x: the versions differ
            moved = next(x for x in msgs["Global"].field if x.name == "bind_to_device")
            moved.number = 23 - moved.number
        return f

    changes = ("field", "type", "nested_enum", "enum", "extra", "rpc", "oneof", "bind_to_device")
    for change in changes:
        assert differences([mutated(change)], theirs), change


def normalized(f: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """Drop what differs between protoc versions but not in meaning (json_name, source info)."""
    out = descriptor_pb2.FileDescriptorProto()
    out.CopyFrom(f)
    out.ClearField("source_code_info")

    def strip(msgs: list[descriptor_pb2.DescriptorProto]) -> None:
        for m in msgs:
            for fld in m.field:
                fld.ClearField("json_name")
            strip(list(m.nested_type))

    strip(list(out.message_type))
    return out


def test_generated_code_is_fresh(api: Api, ours: FileSet) -> None:
    """announcer/_proto/gobgp_vN_pb2.py embeds what protos/gobgp_vN.proto compiles to now."""
    generated = importlib.import_module(api.generated_module)
    embedded = descriptor_pb2.FileDescriptorProto.FromString(generated.DESCRIPTOR.serialized_pb)
    assert normalized(embedded) == normalized(our_file(ours, api)), (
        "announcer/_proto is stale: run protos/generate.sh"
    )
