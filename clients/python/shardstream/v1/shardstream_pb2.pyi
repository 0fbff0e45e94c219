from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LastBatchPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LAST_BATCH_POLICY_UNSPECIFIED: _ClassVar[LastBatchPolicy]
    LAST_BATCH_POLICY_DROP: _ClassVar[LastBatchPolicy]
    LAST_BATCH_POLICY_PAD: _ClassVar[LastBatchPolicy]
LAST_BATCH_POLICY_UNSPECIFIED: LastBatchPolicy
LAST_BATCH_POLICY_DROP: LastBatchPolicy
LAST_BATCH_POLICY_PAD: LastBatchPolicy

class JobSpec(_message.Message):
    __slots__ = ("dataset", "seed", "epoch", "world_size", "batch_size", "window", "last_batch", "resume_token", "fingerprint")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LAST_BATCH_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    seed: int
    epoch: int
    world_size: int
    batch_size: int
    window: int
    last_batch: LastBatchPolicy
    resume_token: str
    fingerprint: str
    def __init__(self, dataset: _Optional[str] = ..., seed: _Optional[int] = ..., epoch: _Optional[int] = ..., world_size: _Optional[int] = ..., batch_size: _Optional[int] = ..., window: _Optional[int] = ..., last_batch: _Optional[_Union[LastBatchPolicy, str]] = ..., resume_token: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    def __init__(self, dataset: _Optional[str] = ...) -> None: ...

class GetDatasetResponse(_message.Message):
    __slots__ = ("name", "fingerprint", "shards", "samples", "bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    fingerprint: str
    shards: int
    samples: int
    bytes: int
    def __init__(self, name: _Optional[str] = ..., fingerprint: _Optional[str] = ..., shards: _Optional[int] = ..., samples: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class PlanEpochRequest(_message.Message):
    __slots__ = ("job", "max_loaders_per_rank")
    JOB_FIELD_NUMBER: _ClassVar[int]
    MAX_LOADERS_PER_RANK_FIELD_NUMBER: _ClassVar[int]
    job: JobSpec
    max_loaders_per_rank: int
    def __init__(self, job: _Optional[_Union[JobSpec, _Mapping]] = ..., max_loaders_per_rank: _Optional[int] = ...) -> None: ...

class PlanEpochResponse(_message.Message):
    __slots__ = ("dataset_fingerprint", "steps", "samples", "dropped", "padded", "resume_token", "loader_addresses", "rank_loaders", "window")
    DATASET_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    PADDED_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LOADER_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    RANK_LOADERS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    dataset_fingerprint: str
    steps: int
    samples: int
    dropped: int
    padded: int
    resume_token: str
    loader_addresses: _containers.RepeatedScalarFieldContainer[str]
    rank_loaders: _containers.RepeatedCompositeFieldContainer[RankLoaders]
    window: int
    def __init__(self, dataset_fingerprint: _Optional[str] = ..., steps: _Optional[int] = ..., samples: _Optional[int] = ..., dropped: _Optional[int] = ..., padded: _Optional[int] = ..., resume_token: _Optional[str] = ..., loader_addresses: _Optional[_Iterable[str]] = ..., rank_loaders: _Optional[_Iterable[_Union[RankLoaders, _Mapping]]] = ..., window: _Optional[int] = ...) -> None: ...

class RankLoaders(_message.Message):
    __slots__ = ("addresses",)
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchAssignmentRequest(_message.Message):
    __slots__ = ("job", "rank", "max_loaders_per_rank", "current_addresses")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    MAX_LOADERS_PER_RANK_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    job: JobSpec
    rank: int
    max_loaders_per_rank: int
    current_addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job: _Optional[_Union[JobSpec, _Mapping]] = ..., rank: _Optional[int] = ..., max_loaders_per_rank: _Optional[int] = ..., current_addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchAssignmentResponse(_message.Message):
    __slots__ = ("addresses", "generation")
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    generation: int
    def __init__(self, addresses: _Optional[_Iterable[str]] = ..., generation: _Optional[int] = ...) -> None: ...

class ReportProgressRequest(_message.Message):
    __slots__ = ("job", "job_name", "rank", "worker", "workers", "last_step", "steps", "samples", "bytes", "wait_seconds", "elapsed_seconds")
    JOB_FIELD_NUMBER: _ClassVar[int]
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    job: JobSpec
    job_name: str
    rank: int
    worker: int
    workers: int
    last_step: int
    steps: int
    samples: int
    bytes: int
    wait_seconds: float
    elapsed_seconds: float
    def __init__(self, job: _Optional[_Union[JobSpec, _Mapping]] = ..., job_name: _Optional[str] = ..., rank: _Optional[int] = ..., worker: _Optional[int] = ..., workers: _Optional[int] = ..., last_step: _Optional[int] = ..., steps: _Optional[int] = ..., samples: _Optional[int] = ..., bytes: _Optional[int] = ..., wait_seconds: _Optional[float] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class ReportProgressResponse(_message.Message):
    __slots__ = ("interval_seconds",)
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    interval_seconds: float
    def __init__(self, interval_seconds: _Optional[float] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "loaders_desired")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    LOADERS_DESIRED_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobProgress]
    loaders_desired: float
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobProgress, _Mapping]]] = ..., loaders_desired: _Optional[float] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("name", "dataset", "epoch", "world_size", "samples_per_second", "bytes_per_second", "data_wait_ratio", "ranks")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    DATA_WAIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dataset: str
    epoch: int
    world_size: int
    samples_per_second: float
    bytes_per_second: float
    data_wait_ratio: float
    ranks: _containers.RepeatedCompositeFieldContainer[RankProgress]
    def __init__(self, name: _Optional[str] = ..., dataset: _Optional[str] = ..., epoch: _Optional[int] = ..., world_size: _Optional[int] = ..., samples_per_second: _Optional[float] = ..., bytes_per_second: _Optional[float] = ..., data_wait_ratio: _Optional[float] = ..., ranks: _Optional[_Iterable[_Union[RankProgress, _Mapping]]] = ...) -> None: ...

class RankProgress(_message.Message):
    __slots__ = ("rank", "last_step", "samples_per_second", "data_wait_ratio", "last_report_age_ms")
    RANK_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    DATA_WAIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    rank: int
    last_step: int
    samples_per_second: float
    data_wait_ratio: float
    last_report_age_ms: int
    def __init__(self, rank: _Optional[int] = ..., last_step: _Optional[int] = ..., samples_per_second: _Optional[float] = ..., data_wait_ratio: _Optional[float] = ..., last_report_age_ms: _Optional[int] = ...) -> None: ...

class LoaderLoad(_message.Message):
    __slots__ = ("streams_open", "max_streams", "bytes_per_second", "cpu_seconds_per_second", "cache_hit_ratio", "cpu_cores")
    STREAMS_OPEN_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    streams_open: int
    max_streams: int
    bytes_per_second: float
    cpu_seconds_per_second: float
    cache_hit_ratio: float
    cpu_cores: int
    def __init__(self, streams_open: _Optional[int] = ..., max_streams: _Optional[int] = ..., bytes_per_second: _Optional[float] = ..., cpu_seconds_per_second: _Optional[float] = ..., cache_hit_ratio: _Optional[float] = ..., cpu_cores: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("address", "load", "leaving")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    address: str
    load: LoaderLoad
    leaving: bool
    def __init__(self, address: _Optional[str] = ..., load: _Optional[_Union[LoaderLoad, _Mapping]] = ..., leaving: _Optional[bool] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("pool_loaders", "interval_ms")
    POOL_LOADERS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    pool_loaders: int
    interval_ms: int
    def __init__(self, pool_loaders: _Optional[int] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class ListLoadersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLoadersResponse(_message.Message):
    __slots__ = ("loaders", "timeout_ms")
    LOADERS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    loaders: _containers.RepeatedCompositeFieldContainer[PoolLoader]
    timeout_ms: int
    def __init__(self, loaders: _Optional[_Iterable[_Union[PoolLoader, _Mapping]]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class PoolLoader(_message.Message):
    __slots__ = ("address", "load", "leaving", "last_beat_age_ms", "joined_age_ms")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    LAST_BEAT_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    JOINED_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    address: str
    load: LoaderLoad
    leaving: bool
    last_beat_age_ms: int
    joined_age_ms: int
    def __init__(self, address: _Optional[str] = ..., load: _Optional[_Union[LoaderLoad, _Mapping]] = ..., leaving: _Optional[bool] = ..., last_beat_age_ms: _Optional[int] = ..., joined_age_ms: _Optional[int] = ...) -> None: ...

class StreamBatchesRequest(_message.Message):
    __slots__ = ("job", "rank", "from_step", "max_steps", "stride", "columnar")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    COLUMNAR_FIELD_NUMBER: _ClassVar[int]
    job: JobSpec
    rank: int
    from_step: int
    max_steps: int
    stride: int
    columnar: bool
    def __init__(self, job: _Optional[_Union[JobSpec, _Mapping]] = ..., rank: _Optional[int] = ..., from_step: _Optional[int] = ..., max_steps: _Optional[int] = ..., stride: _Optional[int] = ..., columnar: _Optional[bool] = ...) -> None: ...

class StreamBatchesResponse(_message.Message):
    __slots__ = ("batch",)
    BATCH_FIELD_NUMBER: _ClassVar[int]
    batch: Batch
    def __init__(self, batch: _Optional[_Union[Batch, _Mapping]] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("rank", "epoch", "step", "samples", "resume_token", "columns")
    RANK_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    rank: int
    epoch: int
    step: int
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    resume_token: str
    columns: Columns
    def __init__(self, rank: _Optional[int] = ..., epoch: _Optional[int] = ..., step: _Optional[int] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., resume_token: _Optional[str] = ..., columns: _Optional[_Union[Columns, _Mapping]] = ...) -> None: ...

class Columns(_message.Message):
    __slots__ = ("count", "shards", "indices", "keys", "key_offsets", "fields")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    KEY_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    count: int
    shards: bytes
    indices: bytes
    keys: bytes
    key_offsets: bytes
    fields: _containers.RepeatedCompositeFieldContainer[Column]
    def __init__(self, count: _Optional[int] = ..., shards: _Optional[bytes] = ..., indices: _Optional[bytes] = ..., keys: _Optional[bytes] = ..., key_offsets: _Optional[bytes] = ..., fields: _Optional[_Iterable[_Union[Column, _Mapping]]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "data", "offsets", "fixed_size", "present")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    FIXED_SIZE_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: bytes
    offsets: bytes
    fixed_size: int
    present: bytes
    def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ..., offsets: _Optional[bytes] = ..., fixed_size: _Optional[int] = ..., present: _Optional[bytes] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("shard", "index", "key", "fields")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    shard: int
    index: int
    key: str
    fields: _containers.RepeatedCompositeFieldContainer[Field]
    def __init__(self, shard: _Optional[int] = ..., index: _Optional[int] = ..., key: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[Field, _Mapping]]] = ...) -> None: ...

class Field(_message.Message):
    __slots__ = ("name", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: bytes
    def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...
