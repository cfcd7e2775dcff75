"""The custom resources, as pydantic models: the single source of the CRD schemas.

`feldera-operator crds` turns these models into the manifests under `crds/` (see `crdgen.py`).
Field descriptions become the text `kubectl explain` shows, so they are written for users.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

GROUP = "feldera.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "feldera"

# Feldera's own rules (feldera-api.md).
PIPELINE_NAME_PATTERN = r"^([A-Za-z0-9][-A-Za-z0-9_]*)?[A-Za-z0-9]$"
PIPELINE_NAME_MAX = 63
CONNECTOR_NAME_PATTERN = r"^[a-zA-Z0-9_-]+$"
CONNECTOR_NAME_MAX = 100
# A SQL identifier: unquoted (case-insensitive in Feldera) or double-quoted (exact).
RELATION_NAME_PATTERN = r'^([A-Za-z_][A-Za-z0-9_]*|"[^"]+")$'
RELATION_NAME_MAX = 128
MAX_CONNECTORS = 256

# Size bounds of the declared program, in characters (one byte each for ASCII text). A resource is
# stored whole in etcd, whose requests stop at 1.5 MiB: 512 KiB of SQL + 128 KiB of Rust + 16 KiB
# of Cargo TOML, 512 declared connectors and status.program at its bounds stay under 1 MiB, which
# leaves room for metadata (annotations: 256 KiB at most) and the connectors' status. A larger
# program goes in a ConfigMap (sqlFrom), whose own limit is 1 MiB.
SQL_MAX = 512 * 1024
UDF_RUST_MAX = 128 * 1024
UDF_TOML_MAX = 16 * 1024
CONFIG_KEYS_MAX = 64
# status.program stays small whatever the program: the first errors, the first names of a diff.
PROGRAM_ERRORS_MAX = 20
PROGRAM_MESSAGE_MAX = 1024
DIFF_NAMES_MAX = 32
PROGRAM_HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"
# ConfigMap keys (Kubernetes' IsConfigMapKey).
CONFIGMAP_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"

ConditionStatus = Literal["True", "False", "Unknown"]


# Kubernetes-only schema markers, carried into the CRDs by crdgen.py; pydantic ignores them.
def _list_map(*keys: str) -> JsonDict:
    """A list that server-side apply merges entry by entry, keyed by `keys` (unique per list)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def _immutable(field: str) -> JsonDict:
    """The field keeps its value once set (a transition rule runs only when both values exist)."""
    return {
        "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": f"{field} is immutable."}
        ]
    }


def _set_once(field: str) -> JsonDict:
    """A rule for the parent object: the field can be neither added nor removed by an update."""
    return {
        "rule": f"has(self.{field}) == has(oldSelf.{field})",
        "message": f"{field} cannot be added or removed after creation.",
        "fieldPath": f".{field}",
    }


class _Model(BaseModel):
    """Base: camelCase names as written in YAML, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ----------------------------------------------------------------------------- shared pieces


class SecretKeyRef(_Model):
    """A key in a Secret in the resource's own namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253, description="Name of the Secret.")]
    key: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            description="Key inside the Secret whose value is used.",
        ),
    ]


class ApiKeySecretRef(SecretKeyRef):
    key: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            description="Key inside the Secret that holds the Feldera API key (`apikey:...`).",
        ),
    ] = "apiKey"


class CaSecretRef(SecretKeyRef):
    key: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            description="Key inside the Secret that holds the PEM bundle of trusted CAs.",
        ),
    ] = "ca.crt"


class Condition(_Model):
    """A Kubernetes condition (metav1.Condition)."""

    type: Annotated[
        str,
        Field(
            max_length=316,
            description="Condition type: Ready, Synced, Reconciling or Stalled.",
        ),
    ]
    status: Annotated[ConditionStatus, Field(description="True, False or Unknown.")]
    reason: Annotated[
        str,
        Field(
            max_length=1024,
            description="CamelCase reason from a fixed catalogue (see the README).",
        ),
    ]
    message: Annotated[str, Field(max_length=32768, description="Human-readable details.")] = ""
    lastTransitionTime: Annotated[
        str,
        Field(description="When `status` last changed (RFC 3339)."),
    ]
    observedGeneration: Annotated[
        int | None,
        Field(ge=0, description="The metadata.generation this condition describes."),
    ] = None


# ----------------------------------------------------------------------------- FelderaInstance


class FelderaInstanceSpec(_Model):
    """Where a Feldera API lives and how to authenticate to it."""

    url: Annotated[
        str,
        Field(
            pattern=r"^https?://[^\s/]+(/.*)?$",
            max_length=2048,
            description="Base URL of the Feldera API, e.g. http://feldera-api-server.feldera:8080.",
        ),
    ]
    apiKeySecretRef: Annotated[
        ApiKeySecretRef | None,
        Field(
            description="Secret key holding a Feldera API key. Omit when Feldera runs without auth."
        ),
    ] = None
    caSecretRef: Annotated[
        CaSecretRef | None,
        Field(description="Secret key holding CA certificates to trust for an https URL."),
    ] = None
    tenant: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=253,
            description="Feldera tenant, sent as the Feldera-Tenant header.",
        ),
    ] = None


class FelderaInstanceStatus(_Model):
    """What the operator last saw of this Feldera API."""

    observedGeneration: Annotated[
        int | None, Field(description="The metadata.generation this status describes.")
    ] = None
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=8,
            description="Ready (the API answered), Synced, Reconciling, Stalled.",
            json_schema_extra=_list_map("type"),
        ),
    ] = []
    reachable: Annotated[
        bool | None, Field(description="Whether the last request to the API succeeded.")
    ] = None
    version: Annotated[str | None, Field(description="Feldera version from GET /v0/config.")] = None
    edition: Annotated[
        str | None,
        Field(description="Feldera edition from GET /v0/config (Open source or Enterprise)."),
    ] = None
    pipelines: Annotated[int | None, Field(description="Number of pipelines the API reported.")] = (
        None
    )


class FelderaInstance(_Model):
    """A Feldera API endpoint that FelderaPipelines refer to with spec.instanceRef."""

    KIND: ClassVar[str] = "FelderaInstance"
    PLURAL: ClassVar[str] = "felderainstances"
    SINGULAR: ClassVar[str] = "felderainstance"
    SHORT_NAMES: ClassVar[list[str]] = ["fi"]

    apiVersion: Literal["feldera.dev/v1alpha1"] = "feldera.dev/v1alpha1"
    kind: Literal["FelderaInstance"] = "FelderaInstance"
    metadata: dict[str, Any] = {}
    spec: FelderaInstanceSpec
    status: FelderaInstanceStatus | None = None


# ----------------------------------------------------------------------------- FelderaPipeline


class InstanceRef(_Model):
    """A FelderaInstance in the same namespace."""

    name: Annotated[
        str,
        Field(min_length=1, max_length=253, description="Name of the FelderaInstance."),
    ]


ConnectorNameField = Annotated[
    str,
    Field(
        pattern=CONNECTOR_NAME_PATTERN,
        max_length=CONNECTOR_NAME_MAX,
        description="Connector name as declared in the SQL (`name`), or `unnamed-N`.",
    ),
]
PausedField = Annotated[
    bool,
    Field(description="Desired state of the connector: true pauses it, false starts it."),
]


class InputConnector(_Model):
    """An input connector of a table whose paused state this resource controls."""

    table: Annotated[
        str,
        Field(
            pattern=RELATION_NAME_PATTERN,
            max_length=RELATION_NAME_MAX,
            description=(
                "Table name. Unquoted names are case-insensitive; a table declared with quotes "
                'is written with its quotes, e.g. "\\"MyTable\\"".'
            ),
        ),
    ]
    connector: ConnectorNameField
    paused: PausedField = False


class OutputConnector(_Model):
    """An output connector of a view whose paused state this resource controls (Feldera 0.369+)."""

    view: Annotated[
        str,
        Field(
            pattern=RELATION_NAME_PATTERN,
            max_length=RELATION_NAME_MAX,
            description="View name; quoting rules as for tables.",
        ),
    ]
    connector: ConnectorNameField
    paused: PausedField = False


DeletionPolicy = Literal["Orphan", "Stop", "Delete"]
UpdateStrategy = Literal["Restart", "Recreate", "Manual"]
BootstrapPolicy = Literal["AwaitApproval", "Allow", "Reject"]
ManagementPolicy = Literal["Full", "ObserveOnly"]


class ConfigMapKeyRef(_Model):
    """A key in a ConfigMap in the resource's own namespace."""

    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            description=(
                'Name of the ConfigMap. It must carry the label feldera.dev/program: "true" '
                "(the operator watches only ConfigMaps so labelled)."
            ),
        ),
    ]
    key: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            pattern=CONFIGMAP_KEY_PATTERN,
            description="Key inside the ConfigMap whose value is the SQL program.",
        ),
    ]


class SqlSource(_Model):
    """Where the SQL program is read from, instead of inline `sql`."""

    configMapKeyRef: Annotated[
        ConfigMapKeyRef,
        Field(
            description=(
                "A ConfigMap key holding the SQL (a ConfigMap holds up to 1 MiB). Editing the "
                "ConfigMap changes the program like editing `sql` does."
            )
        ),
    ]


_EXACTLY_ONE_SQL = "spec.program: set exactly one of sql and sqlFrom."


class PipelineProgram(_Model):
    """The pipeline itself, as Feldera stores it: SQL, UDFs and configuration."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.sql) != has(self.sqlFrom)", "message": _EXACTLY_ONE_SQL}
            ]
        }
    )

    sql: Annotated[
        str | None,
        Field(
            max_length=SQL_MAX,
            description=(
                "The SQL program (Feldera's program_code), inline. At most 524288 characters "
                "(512 KiB of ASCII): the whole resource must fit etcd's 1.5 MiB. Note that "
                "client-side `kubectl apply` copies the object into an annotation limited to "
                "256 KiB: apply a larger program with `kubectl apply --server-side`, or put it in "
                "a ConfigMap (sqlFrom). Exactly one of sql and sqlFrom."
            ),
        ),
    ] = None
    sqlFrom: Annotated[
        SqlSource | None,
        Field(description="Read the SQL program from a ConfigMap. Exactly one of sql and sqlFrom."),
    ] = None
    udfRust: Annotated[
        str,
        Field(
            max_length=UDF_RUST_MAX,
            description=(
                "Rust implementations of the program's user-defined functions (Feldera's "
                "udf_rust). At most 131072 characters (128 KiB of ASCII). Empty: no UDFs."
            ),
        ),
    ] = ""
    udfToml: Annotated[
        str,
        Field(
            max_length=UDF_TOML_MAX,
            description=(
                "Cargo.toml dependencies of the UDFs (Feldera's udf_toml). At most 16384 "
                "characters (16 KiB of ASCII)."
            ),
        ),
    ] = ""
    runtimeConfig: Annotated[
        dict[str, Any] | None,
        Field(
            max_length=CONFIG_KEYS_MAX,
            description=(
                "Feldera's runtime_config (workers, storage, fault_tolerance, resources...). Only "
                "the keys given are managed, at every depth; Feldera's defaults fill the rest and "
                "are never reported as differences. A change needs a restart. workers, hosts, "
                "fault_tolerance, clock_timezone_offset and resources.storage_mb_max, "
                "resources.namespace, resources.storage_class cannot change while the pipeline's "
                "storage is in use: the resource then reports StorageInUse, unless updateStrategy "
                "is Recreate (which clears storage). A key this Feldera does not know is listed in "
                "status.program.ignoredKeys."
            ),
        ),
    ] = None
    programConfig: Annotated[
        dict[str, Any] | None,
        Field(
            max_length=CONFIG_KEYS_MAX,
            description=(
                "Feldera's program_config (profile, cache, runtime_version...). Only the keys "
                "given are managed; a change recompiles the program."
            ),
        ),
    ] = None

    @model_validator(mode="after")
    def _exactly_one_sql(self) -> PipelineProgram:
        if (self.sql is None) == (self.sqlFrom is None):
            raise ValueError(_EXACTLY_ONE_SQL)
        return self


class Bootstrap(_Model):
    """Whether a program change may rebuild state from a checkpoint (Feldera Enterprise)."""

    policy: Annotated[
        BootstrapPolicy,
        Field(
            description=(
                "AwaitApproval (default, as Feldera's own): a change that needs a bootstrap waits "
                "until `approve` holds its hash. Allow: apply without approval. Reject: never "
                "apply a change that needs a bootstrap (BootstrapRejected)."
            )
        ),
    ] = "AwaitApproval"
    approve: Annotated[
        str | None,
        Field(
            pattern=PROGRAM_HASH_PATTERN,
            description=(
                "Approves exactly one pending program: copy status.program.pending.hash here "
                "(sha256:...). Any later edit of the program changes its hash and needs a new "
                "approval."
            ),
        ),
    ] = None


class FelderaPipelineSpec(_Model):
    """The desired state of one Feldera pipeline and of the connectors listed here."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_set_once("pipelineName"), _set_once("instanceRef")]
        }
    )

    pipelineName: Annotated[
        str | None,
        Field(
            pattern=PIPELINE_NAME_PATTERN,
            max_length=PIPELINE_NAME_MAX,
            description="Pipeline name in Feldera. Defaults to metadata.name. Immutable.",
            json_schema_extra=_immutable("pipelineName"),
        ),
    ] = None
    instanceRef: Annotated[
        InstanceRef | None,
        Field(
            description=(
                "The FelderaInstance that serves this pipeline. Omit to use the operator's "
                "default instance. Immutable."
            ),
            json_schema_extra=_immutable("instanceRef"),
        ),
    ] = None
    paused: Annotated[
        bool,
        Field(
            description=(
                "Running when false, Paused when true. When the pipeline starts from Stopped, "
                "this picks start?initial=running|paused."
            )
        ),
    ] = False
    stopped: Annotated[
        bool,
        Field(description="Stop the pipeline (force). Wins over `paused`."),
    ] = False
    deletionPolicy: Annotated[
        DeletionPolicy,
        Field(
            description=(
                "What deleting this resource does in Feldera: Orphan leaves the pipeline as it "
                "is; Stop stops it; Delete stops it, clears its storage and deletes it (its state "
                "is lost)."
            )
        ),
    ] = "Orphan"
    managementPolicy: Annotated[
        ManagementPolicy,
        Field(
            description=(
                "Full (default): the operator acts to make Feldera match this spec. ObserveOnly: "
                "it only reads and reports differences, and never changes anything in Feldera "
                "(to adopt a pipeline, or watch one another tool drives)."
            )
        ),
    ] = "Full"
    program: Annotated[
        PipelineProgram | None,
        Field(
            description=(
                "The pipeline itself: SQL, UDFs, runtime and program configuration. Absent: the "
                "program is managed elsewhere and only the run state is declared here. When "
                "given, the operator creates the pipeline if missing and applies changes as "
                "`updateStrategy` says; a change that does not compile is reported and never "
                "stops a running pipeline."
            )
        ),
    ] = None
    updateStrategy: Annotated[
        UpdateStrategy,
        Field(
            description=(
                "How a program change reaches a running pipeline (a stopped one is updated at "
                "once). Restart (default): preview, then stop, update, start. Recreate: as "
                "Restart, and clears storage (state is lost) where the change needs it. Manual: "
                "never stop a running pipeline; the change waits (UpdatePending) until it is "
                "stopped."
            )
        ),
    ] = "Restart"
    bootstrap: Annotated[
        Bootstrap | None,
        Field(
            description=(
                "Approval of program changes that rebuild state from a checkpoint (Feldera "
                "Enterprise with storage in use). Absent: policy AwaitApproval, nothing approved."
            )
        ),
    ] = None
    inputs: Annotated[
        list[InputConnector],
        Field(
            max_length=MAX_CONNECTORS,
            description=(
                "Input connectors this resource controls, keyed by (table, connector); at most "
                "256 entries. Connectors not listed are reported in status and never touched."
            ),
            json_schema_extra=_list_map("table", "connector"),
        ),
    ] = []
    outputs: Annotated[
        list[OutputConnector],
        Field(
            max_length=MAX_CONNECTORS,
            description=(
                "Output connectors this resource controls, keyed by (view, connector); at most "
                "256 entries. Needs Feldera 0.369 or newer."
            ),
            json_schema_extra=_list_map("view", "connector"),
        ),
    ] = []


ConnectorState = Literal["Running", "Paused", "Unknown"]


class _ConnectorStatusBase(_Model):
    connector: Annotated[str, Field(max_length=CONNECTOR_NAME_MAX, description="Connector name.")]
    declared: Annotated[
        bool, Field(description="Whether spec lists this connector (only those are acted on).")
    ]
    desiredPaused: Annotated[
        bool | None,
        Field(description="The paused value the spec declares; absent when not declared."),
    ] = None
    paused: Annotated[
        bool | None,
        Field(description="The paused flag Feldera reports; absent when it cannot be read."),
    ] = None
    state: Annotated[
        ConnectorState,
        Field(description="Running or Paused as Feldera reports it; Unknown when not readable."),
    ]
    active: Annotated[
        bool,
        Field(description="Moving data: the pipeline is Running and the connector is Running."),
    ]
    reason: Annotated[
        str | None,
        Field(description="Why the connector is not as declared, when it is not."),
    ] = None
    endOfInput: Annotated[
        bool | None, Field(description="The connector reached the end of its input.")
    ] = None
    health: Annotated[
        str | None, Field(description="Healthy or Unhealthy, as Feldera reports it.")
    ] = None
    fatalError: Annotated[str | None, Field(description="The connector's fatal error, if any.")] = (
        None
    )


class InputConnectorStatus(_ConnectorStatusBase):
    """Observed state of one input connector."""

    table: Annotated[str, Field(max_length=RELATION_NAME_MAX, description="Table name.")]


class OutputConnectorStatus(_ConnectorStatusBase):
    """Observed state of one output connector."""

    view: Annotated[str, Field(max_length=RELATION_NAME_MAX, description="View name.")]


class ProgramMessage(_Model):
    """One compiler message about the declared program."""

    line: Annotated[int | None, Field(description="Line of the SQL program (from 1).")] = None
    column: Annotated[int | None, Field(description="Column in that line (from 1).")] = None
    message: Annotated[
        str, Field(max_length=PROGRAM_MESSAGE_MAX, description="The compiler's message.")
    ]
    warning: Annotated[bool, Field(description="A warning rather than an error.")] = False


DiffName = Annotated[
    str,
    Field(
        max_length=RELATION_NAME_MAX + 1 + CONNECTOR_NAME_MAX,
        description="A table or view name, or a connector as relation.connector.",
    ),
]
FieldName = Annotated[
    str,
    Field(max_length=256, description="A Feldera field, dotted (runtime_config.workers)."),
]


class NameChanges(_Model):
    """Names added, removed and modified by a program change."""

    added: Annotated[
        list[DiffName], Field(max_length=DIFF_NAMES_MAX, description="Names the change adds.")
    ] = []
    removed: Annotated[
        list[DiffName], Field(max_length=DIFF_NAMES_MAX, description="Names the change removes.")
    ] = []
    modified: Annotated[
        list[DiffName],
        Field(max_length=DIFF_NAMES_MAX, description="Names whose definition the change alters."),
    ] = []


class ProgramDiff(_Model):
    """What a program change does, as Feldera's preview (POST .../diff) reports it."""

    tables: Annotated[NameChanges, Field(description="Tables added, removed, modified.")]
    views: Annotated[
        NameChanges,
        Field(description="Views added, removed, modified (modified views are recomputed)."),
    ]
    inputConnectors: Annotated[
        NameChanges, Field(description="Input connectors (table.connector) added, removed...")
    ]
    outputConnectors: Annotated[
        NameChanges, Field(description="Output connectors (view.connector) added, removed...")
    ]
    truncated: Annotated[
        bool | None,
        Field(description=f"Some lists were cut at {DIFF_NAMES_MAX} names."),
    ] = None
    error: Annotated[
        str | None,
        Field(
            max_length=PROGRAM_MESSAGE_MAX,
            description="Feldera could not compare the programs (program_diff_error).",
        ),
    ] = None


WaitingFor = Literal["Approval", "Stop", "StorageClear"]


class PendingProgram(_Model):
    """A declared change that Feldera does not run yet."""

    hash: Annotated[
        str,
        Field(
            pattern=PROGRAM_HASH_PATTERN,
            description="Hash of the pending program: what spec.bootstrap.approve must hold.",
        ),
    ]
    fromVersion: Annotated[
        int | None,
        Field(description="Feldera's program_version the diff compares against."),
    ] = None
    diff: Annotated[
        ProgramDiff | None,
        Field(description="What the change does; absent when the SQL is unchanged."),
    ] = None
    changedFields: Annotated[
        list[FieldName],
        Field(
            max_length=CONFIG_KEYS_MAX,
            description="Feldera fields the change sets (program_code, runtime_config.workers...).",
        ),
    ] = []
    needsBootstrap: Annotated[
        bool,
        Field(
            description=(
                "Applying it rebuilds state from a checkpoint (Enterprise, storage in use, tables "
                "or views changed): it needs spec.bootstrap.approve unless policy is Allow."
            )
        ),
    ] = False
    losesState: Annotated[
        bool,
        Field(
            description=(
                "Applying it starts from empty state (open source: every restart does; or "
                "storage is cleared)."
            )
        ),
    ] = False
    waitingFor: Annotated[
        WaitingFor | None,
        Field(
            description=(
                "What a person must do: Approval (set spec.bootstrap.approve to `hash`), Stop "
                "(updateStrategy Manual: stop the pipeline), StorageClear (clear its storage, or "
                "use updateStrategy Recreate)."
            )
        ),
    ] = None


class PipelineProgramStatus(_Model):
    """The declared program and what Feldera holds of it."""

    hash: Annotated[
        str,
        Field(
            pattern=PROGRAM_HASH_PATTERN,
            description=(
                "sha256 of the declared program: SQL, udfRust, udfToml, programConfig and the "
                "declared runtimeConfig keys, as canonical JSON."
            ),
        ),
    ]
    appliedHash: Annotated[
        str | None,
        Field(description="The declared hash Feldera was last confirmed to hold, compiled."),
    ] = None
    version: Annotated[int | None, Field(description="Feldera's program_version.")] = None
    status: Annotated[
        str | None, Field(description="Feldera's program_status (Success, SqlError...).")
    ] = None
    errors: Annotated[
        list[ProgramMessage],
        Field(
            max_length=PROGRAM_ERRORS_MAX,
            description=(
                f"The first {PROGRAM_ERRORS_MAX} compiler messages about the declared program "
                "(from Feldera's compilation, or from the preview of a change)."
            ),
        ),
    ] = []
    pending: Annotated[
        PendingProgram | None,
        Field(description="A declared change not applied yet, while there is one."),
    ] = None
    ignoredKeys: Annotated[
        list[FieldName],
        Field(
            max_length=CONFIG_KEYS_MAX,
            description="Declared configuration keys this Feldera does not store (unknown to it).",
        ),
    ] = []


class FelderaPipelineStatus(_Model):
    """What the operator last saw of the pipeline in Feldera."""

    observedGeneration: Annotated[
        int | None, Field(description="The metadata.generation this status describes.")
    ] = None
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=8,
            description="Ready, Synced, Reconciling and Stalled.",
            json_schema_extra=_list_map("type"),
        ),
    ] = []
    pipelineName: Annotated[str | None, Field(description="The pipeline name used in Feldera.")] = (
        None
    )
    state: Annotated[
        str | None, Field(description="Feldera's deployment_status (Running, Paused, Stopped...).")
    ] = None
    desiredState: Annotated[
        str | None, Field(description="Feldera's deployment_desired_status.")
    ] = None
    programStatus: Annotated[
        str | None, Field(description="Feldera's program_status (Success, SqlError...).")
    ] = None
    deploymentError: Annotated[
        str | None, Field(description="Feldera's deployment_error message, if any.")
    ] = None
    connectors: Annotated[
        str | None,
        Field(description="Summary for `kubectl get`: active connectors / all connectors."),
    ] = None
    program: Annotated[
        PipelineProgramStatus | None,
        Field(description="The declared program (spec.program) and its progress, when declared."),
    ] = None
    inputs: Annotated[
        list[InputConnectorStatus],
        Field(
            max_length=1024,
            description="One entry per input connector Feldera reports.",
            json_schema_extra=_list_map("table", "connector"),
        ),
    ] = []
    outputs: Annotated[
        list[OutputConnectorStatus],
        Field(
            max_length=1024,
            description="One entry per output connector Feldera reports.",
            json_schema_extra=_list_map("view", "connector"),
        ),
    ] = []


class FelderaPipeline(_Model):
    """A Feldera pipeline and the paused state of its connectors, declared."""

    # The pipeline name defaults to metadata.name, which Kubernetes allows longer and with dots.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "has(self.spec.pipelineName) || "
                        "(size(self.metadata.name) <= 63 && !self.metadata.name.contains('.'))"
                    ),
                    "message": (
                        "metadata.name is not a valid Feldera pipeline name (at most 63 "
                        "characters, no dots): set spec.pipelineName."
                    ),
                }
            ]
        }
    )

    KIND: ClassVar[str] = "FelderaPipeline"
    PLURAL: ClassVar[str] = "felderapipelines"
    SINGULAR: ClassVar[str] = "felderapipeline"
    SHORT_NAMES: ClassVar[list[str]] = ["fpl"]

    apiVersion: Literal["feldera.dev/v1alpha1"] = "feldera.dev/v1alpha1"
    kind: Literal["FelderaPipeline"] = "FelderaPipeline"
    metadata: dict[str, Any] = {}
    spec: FelderaPipelineSpec
    status: FelderaPipelineStatus | None = None


RESOURCES: tuple[type[FelderaInstance] | type[FelderaPipeline], ...] = (
    FelderaInstance,
    FelderaPipeline,
)
