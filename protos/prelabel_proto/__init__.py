"""prelabel's public protocol: generated gRPC stubs for ``prelabel.v1`` and the error vocabulary
shared by server and client."""

from prelabel_proto.prelabel.v1 import prelabel_pb2, prelabel_pb2_grpc

SERVICE_NAME = prelabel_pb2.DESCRIPTOR.services_by_name["PrelabelService"].full_name

__all__ = ["SERVICE_NAME", "prelabel_pb2", "prelabel_pb2_grpc"]
