"""The custom resources, as pydantic models: the single source of the CRD schemas.

`feldera-operator crds` turns these models into the manifests under `crds/` (see `crdgen.py`).
Field descriptions become the text `kubectl explain` shows, so they are written for users.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
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


DeletionPolicy = Literal["Orphan", "Stop"]


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
                "is; Stop stops it."
            )
        ),
    ] = "Orphan"
    inputs: Annotated[
        list[InputConnector],
        Field(
            max_length=MAX_CONNECTORS,
            description=(
                "Input connectors this resource controls, keyed by (table, connector). "
                "Connectors not listed are reported in status and never touched."
            ),
            json_schema_extra=_list_map("table", "connector"),
        ),
    ] = []
    outputs: Annotated[
        list[OutputConnector],
        Field(
            max_length=MAX_CONNECTORS,
            description=(
                "Output connectors this resource controls, keyed by (view, connector). "
                "Needs Feldera 0.369 or newer."
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
