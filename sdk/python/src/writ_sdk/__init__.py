"""writ's agent SDK: attest, run tasks as scopes, call tools with DPoP.

```python
from writ_sdk import Client, JoinToken

client = Client("http://127.0.0.1:8750", JoinToken("wjt_..."), agent="demo-agent")
with client.task(intent="summarise open tickets", capabilities={"tickets": ["read"]}) as task:
    token = task.token_for("tickets", scopes=["read"])
```
"""

from ._core import (
    ActorCredentials,
    AsyncClient,
    AsyncTask,
    AsyncTaskScope,
    DelegatedGrant,
    Instance,
    TaskResult,
    ToolToken,
)
from ._http import Unauthenticated, raise_for_writ
from ._sync import Client, Task, TaskScope
from .attestation import Attestation, JoinToken, OidcToken, SpiffeJwtSvid
from .errors import (
    AttestationFailed,
    Denied,
    DpopError,
    InvalidScope,
    InvalidTarget,
    PendingApproval,
    Quarantined,
    TaskEnded,
    WritError,
)
from .keys import InstanceKey

__version__ = "0.1.0"

__all__ = [
    "ActorCredentials",
    "AsyncClient",
    "AsyncTask",
    "AsyncTaskScope",
    "Attestation",
    "AttestationFailed",
    "Client",
    "DelegatedGrant",
    "Denied",
    "DpopError",
    "Instance",
    "InstanceKey",
    "InvalidScope",
    "InvalidTarget",
    "JoinToken",
    "OidcToken",
    "PendingApproval",
    "Quarantined",
    "SpiffeJwtSvid",
    "Task",
    "TaskEnded",
    "TaskResult",
    "TaskScope",
    "ToolToken",
    "Unauthenticated",
    "WritError",
    "raise_for_writ",
]
