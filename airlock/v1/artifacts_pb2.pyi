from airlock.v1 import call_pb2 as _call_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PutArtifactHeader(_message.Message):
    __slots__ = ("name", "session_id", "media_type", "size", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    session_id: str
    media_type: str
    size: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., session_id: _Optional[str] = ..., media_type: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class PutArtifactRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: PutArtifactHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[PutArtifactHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class PutArtifactResponse(_message.Message):
    __slots__ = ("artifact", "decision", "session_id")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    artifact: _call_pb2.ArtifactRef
    decision: _call_pb2.Decision
    session_id: str
    def __init__(self, artifact: _Optional[_Union[_call_pb2.ArtifactRef, _Mapping]] = ..., decision: _Optional[_Union[_call_pb2.Decision, _Mapping]] = ..., session_id: _Optional[str] = ...) -> None: ...

class GetArtifactRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetArtifactResponse(_message.Message):
    __slots__ = ("artifact", "chunk", "decision")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    artifact: _call_pb2.ArtifactRef
    chunk: bytes
    decision: _call_pb2.Decision
    def __init__(self, artifact: _Optional[_Union[_call_pb2.ArtifactRef, _Mapping]] = ..., chunk: _Optional[bytes] = ..., decision: _Optional[_Union[_call_pb2.Decision, _Mapping]] = ...) -> None: ...

class StatArtifactRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class StatArtifactResponse(_message.Message):
    __slots__ = ("artifact", "decision", "session_id", "created_at")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    artifact: _call_pb2.ArtifactRef
    decision: _call_pb2.Decision
    session_id: str
    created_at: float
    def __init__(self, artifact: _Optional[_Union[_call_pb2.ArtifactRef, _Mapping]] = ..., decision: _Optional[_Union[_call_pb2.Decision, _Mapping]] = ..., session_id: _Optional[str] = ..., created_at: _Optional[float] = ...) -> None: ...

class ListArtifactsRequest(_message.Message):
    __slots__ = ("session_id", "prefix", "shared_only")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    SHARED_ONLY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    prefix: str
    shared_only: bool
    def __init__(self, session_id: _Optional[str] = ..., prefix: _Optional[str] = ..., shared_only: _Optional[bool] = ...) -> None: ...

class ListedArtifact(_message.Message):
    __slots__ = ("artifact", "session_id", "created_at")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    artifact: _call_pb2.ArtifactRef
    session_id: str
    created_at: float
    def __init__(self, artifact: _Optional[_Union[_call_pb2.ArtifactRef, _Mapping]] = ..., session_id: _Optional[str] = ..., created_at: _Optional[float] = ...) -> None: ...

class ListArtifactsResponse(_message.Message):
    __slots__ = ("artifacts", "decision", "truncated")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[ListedArtifact]
    decision: _call_pb2.Decision
    truncated: bool
    def __init__(self, artifacts: _Optional[_Iterable[_Union[ListedArtifact, _Mapping]]] = ..., decision: _Optional[_Union[_call_pb2.Decision, _Mapping]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class DeleteArtifactRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteArtifactResponse(_message.Message):
    __slots__ = ("artifact", "decision")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    artifact: _call_pb2.ArtifactRef
    decision: _call_pb2.Decision
    def __init__(self, artifact: _Optional[_Union[_call_pb2.ArtifactRef, _Mapping]] = ..., decision: _Optional[_Union[_call_pb2.Decision, _Mapping]] = ...) -> None: ...
