"""Who is responsible for the processing, for the record of processing activities
(GDPR Art. 30(1)(a), (d), (e) and (g)): the controller, its data protection officer and
representative, transfers to third countries, and security measures beyond those
consentgate applies itself. The policies say what is processed and how; this file says
by whom. It is optional: without it the register says these facts are not stated.

```yaml
controller: {name: Example Shop Ltd, contact: "1 Example Street, Leeds; privacy@example.com"}
dpo: {name: Jane Roe, contact: dpo@example.com}
representative: {name: ..., contact: ...}      # optional (Art. 27)
transfers: none outside the EEA                # optional, the default is "not stated"
security_measures: [staff access reviewed quarterly]   # optional, added to consentgate's own
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transforms.errors import PolicyError
from transforms.policy import _fail, read_strict_yaml

_PARTIES = ("controller", "dpo", "representative")
_KEYS = (*_PARTIES, "transfers", "security_measures")


@dataclass(frozen=True)
class Party:
    name: str
    contact: str

    def describe(self) -> str:
        return f"{self.name} ({self.contact})"


@dataclass(frozen=True)
class Controller:
    controller: Party
    dpo: Party | None = None
    representative: Party | None = None
    transfers: str | None = None
    security_measures: tuple[str, ...] = ()


def _party(path: str, raw: dict, key: str) -> Party | None:
    value = raw.get(key)
    if value is None and key != "controller":
        return None
    if not isinstance(value, dict) or set(value) != {"name", "contact"}:
        raise _fail(path, key, "must be {name: ..., contact: ...}")
    if not all(isinstance(v, str) and v.strip() for v in value.values()):
        raise _fail(path, key, "name and contact must be text")
    return Party(name=value["name"].strip(), contact=value["contact"].strip())


def load_controller(path: str | Path) -> Controller:
    """Reads and checks the controller file; raises PolicyError naming the file and key."""
    path = str(path)
    raw, _ = read_strict_yaml(path, "the controller file")  # the policies' YAML rules
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: the controller file must be a YAML mapping")
    unknown = sorted(set(raw) - set(_KEYS), key=str)
    if unknown:
        raise _fail(path, str(unknown[0]), f"unknown key (allowed: {', '.join(_KEYS)})")
    transfers = raw.get("transfers")
    if transfers is not None and (not isinstance(transfers, str) or not transfers.strip()):
        raise _fail(path, "transfers", "must be text")
    measures = raw.get("security_measures", [])
    if not isinstance(measures, list) or not all(isinstance(m, str) and m.strip() for m in measures):
        raise _fail(path, "security_measures", "must be a list of text")
    return Controller(
        controller=_party(path, raw, "controller"),
        dpo=_party(path, raw, "dpo"),
        representative=_party(path, raw, "representative"),
        transfers=transfers.strip() if transfers else None,
        security_measures=tuple(m.strip() for m in measures),
    )
