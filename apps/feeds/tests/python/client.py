"""An independent client: Python's grpcio with stubs generated from proto/ by
grpcio-tools. Checks what a standard client sees of a Tandem server and
prints it as one JSON object for the Rust test to compare.

Usage: client.py ADDR GENERATED_DIR
"""

import json
import sys

addr, generated = sys.argv[1], sys.argv[2]
sys.path.insert(0, generated)

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2  # noqa: E402

from feeds.v1 import business_pb2, business_pb2_grpc  # noqa: E402

channel = grpc.insecure_channel(addr)
out = {}

out["health"] = health_pb2_grpc.HealthStub(channel).Check(
    health_pb2.HealthCheckRequest(service=""), timeout=10
).status


def list_services(version):
    # v1 and v1alpha messages are the same on the wire; grpcio-reflection
    # ships only v1alpha's classes, so they serve both paths.
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    first = next(responses)
    return sorted(s.name for s in first.list_services_response.service)


out["reflection_v1"] = list_services("v1")
out["reflection_v1alpha"] = list_services("v1alpha")

stub = business_pb2_grpc.BusinessStub(channel)
feeds = []
for user, size, tenant in [("42", 5, None), ("7", 0, None), ("guest-3", 8, "lite"), ("13", 99, None)]:
    metadata = [("x-request-id", f"py-{user}")]
    if tenant:
        metadata.append(("x-tenant", tenant))
    r = stub.GetFeed(
        business_pb2.GetFeedRequest(user_id=user, page_size=size), metadata=metadata, timeout=30
    )
    feeds.append(
        {
            "user": user,
            "page_size": size,
            "tenant": tenant,
            "items": [[i.item_id, i.category, i.creator, i.channel] for i in r.items],
            "next_cursor": r.next_cursor,
        }
    )
out["feeds"] = feeds


def code(request, metadata=()):
    try:
        stub.GetFeed(request, metadata=list(metadata), timeout=30)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


out["errors"] = {
    "empty_user": code(business_pb2.GetFeedRequest(user_id="", page_size=5)),
    "bad_cursor": code(business_pb2.GetFeedRequest(user_id="1", page_size=5, cursor="zz")),
    "unknown_tenant": code(
        business_pb2.GetFeedRequest(user_id="1", page_size=5), [("x-tenant", "acme")]
    ),
    "page_size_unset": code(business_pb2.GetFeedRequest(user_id="1", page_size=0)),
}
print(json.dumps(out))
