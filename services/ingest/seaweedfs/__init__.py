"""Vendored SeaweedFS filer protobuf (``filer.proto``) and its generated ``filer_pb2`` (see README.md)."""
