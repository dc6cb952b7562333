"""The state file: the policy in force and the VMs changed at run time,
kept across restarts.

Pure Python, no Ryu. Every policy change accepted through the API is saved
here; at start the controller restores it instead of the network file's
`policy:` section. VMs added, replaced or removed through the API are
saved as changes on top of the file's `vms:` (`"vms": {name: body, or
null for removed}`), and applied on top of it again at start and on every
reload: the file says what a VM is unless the API changed that VM since. The file is replaced atomically (temporary file, fsync,
rename, fsync of the directory), so a crash leaves either the old or the
new policy, never half of one.

    {"format": 1, "saved_at": "...", "network_file": "...",
     "file_policy": {...}, "policy": {...}, "vms": {...},
     "leases": {vm: {"ip": ..., "expires": epoch seconds, "server": MAC}},
     "file_response": {...}, "response": {...},
     "response_state": {"responder": {...}, "actions": [...], "ignored": [...]}}

`response` holds the response rules in force (the file's `response:` form),
`response_state` the IDS's automatic actions in force and their audit trail
(controller/autoresponse.py): a restart must neither release a quarantined
VM nor forget why it was quarantined.

Leases are what DHCP snooping learned for `ip: dhcp` VMs; one that expired
while the controller was away is not restored.

`policy` is in the network file's own form (Policy.to_dict) and is checked
exactly as that section is. `file_policy` is the network file's policy
when this one was saved: if the file's has changed since, the operator
edited it while a saved policy was in force, which is worth a warning.
"""
from __future__ import annotations

import json
import os
import tempfile
import time

from . import dhcp
from .autoresponse import AutoResponse
from .model import Network, NetworkFileError, from_document
from .policy import Policy, PolicyError, parse as parse_policy
from .response import Response, ResponseError, parse_response

FORMAT = 1


class StateFileError(ValueError):
    """A state file that cannot be used; the message names the file."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"state file {path}: {problem}")


def default_path(repo: str, network_file: str) -> str:
    """One state file per network file, under the repository's state/."""
    stem = os.path.splitext(os.path.basename(network_file))[0]
    return os.path.join(repo, "state", f"{stem}.policy.json")


def load(path: str, network: Network, document=None) -> tuple[Policy, dict] | None:
    """The saved policy, checked against `network` (with the saved VM changes
    on top of `document`, the network file's YAML, when there are any), and
    the whole document; None if there is no state file. StateFileError if
    it cannot be used."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateFileError(path, f"cannot read: {e.strerror}") from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise StateFileError(path, f"not valid JSON ({e}); fix or delete it to start "
                                   "from the network file's policy") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "policy" not in doc:
        raise StateFileError(path, f"not a state file of format {FORMAT} (expected a "
                                   "JSON object with 'format' and 'policy')")
    changes = inventory(doc, path)
    if changes:
        if document is None:
            raise StateFileError(path, "it holds VM changes, but the network file's "
                                       "document was not given to check them")
        try:
            network = from_document(document, network.source, changes)
        except NetworkFileError as e:
            raise StateFileError(path, f"its VM changes no longer fit the network file: "
                                       f"{e} (fix or delete the state file)") from None
    try:
        policy = parse_policy(doc["policy"], {s.name for s in network.segments},
                              {vm.name for vm in network.vms})
        network.with_policy(policy)
    except PolicyError as e:
        raise StateFileError(path, f"{e} (the network file {network.source} does not "
                                   "allow this saved policy; fix or delete the state "
                                   "file)") from None
    return policy, doc


def inventory(doc: dict | None, path: str = "") -> dict:
    """The VM changes a state document holds: name -> body, or None."""
    changes = (doc or {}).get("vms") or {}
    if not isinstance(changes, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, dict))
            for k, v in changes.items()):
        raise StateFileError(path, "'vms' must map VM names to objects or null")
    return changes


def leases(doc: dict | None, network: Network, now: float, path: str = "") -> dict:
    """The DHCP leases a state document holds that are still running, for
    `ip: dhcp` VMs of `network`: vm -> dhcp.Lease."""
    raw = (doc or {}).get("leases") or {}
    if not isinstance(raw, dict):
        raise StateFileError(path, "'leases' must map VM names to leases")
    dhcp_vms = {vm.name for vm in network.vms if vm.dhcp}
    out = {}
    for name, body in raw.items():
        try:
            lease = dhcp.Lease(str(body["ip"]), float(body["expires"]), str(body["server"]))
            dhcp.check_address(lease.ip)
        except (TypeError, KeyError, ValueError) as e:
            raise StateFileError(path, f"lease of {name!r} is not valid ({e})") from None
        if name in dhcp_vms and lease.expires > now:
            out[name] = lease
    return out


def file_policy_changed(doc: dict, network_file_policy: Policy) -> bool:
    """Has the network file's policy changed since this state was saved?"""
    return doc.get("file_policy") not in (None, network_file_policy.to_dict())


def save(path: str, policy: Policy, network_file_policy: Policy,
         network_file: str = "", vms: dict | None = None, leases: dict | None = None,
         response: Response | None = None, file_response: Response | None = None,
         response_state: dict | None = None) -> None:
    """Replace the state file atomically; OSError if it cannot be written.
    vms: the VM changes made at run time (name -> body, or None: removed);
    leases: vm -> dhcp.Lease; response: the rules in force, file_response:
    the network file's; response_state: AutoResponse.to_state()."""
    doc = {"format": FORMAT,
           "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "network_file": network_file,
           "file_policy": network_file_policy.to_dict(),
           "policy": policy.to_dict(),
           "vms": dict(vms or {}),
           "leases": {vm: lease.to_dict() for vm, lease in sorted((leases or {}).items())}}
    if response is not None:
        doc["response"] = response.to_dict()
        doc["file_response"] = (file_response or response).to_dict()
    if response_state is not None:
        doc["response_state"] = response_state
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".policy-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # The rename itself must reach the disk, or a crash may bring back the old file.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def restore(path: str, network: Network, document: dict, logger
            ) -> tuple[Network, dict, dict, dict | None]:
    """The network to start with: the file's, with the saved policy,
    response rules and run-time VM changes on top when the state file holds
    them; those VM changes; the DHCP leases still running; and the saved
    response state (AutoResponse's), or None. StateFileError if the state
    file cannot be used."""
    saved = load(path, network, document)
    if saved is None:
        logger.info("no state file %s yet: the policy is the network file's", path)
        return network, {}, {}, None
    policy, doc = saved
    changes = inventory(doc, path)
    restored = from_document(document, network.source, changes).with_policy(policy)
    logger.info("policy%s restored from %s (saved %s)",
                f" and {len(changes)} VM changes" if changes else "", path,
                doc.get("saved_at"))
    if file_policy_changed(doc, network.policy):
        logger.warning("the network file's policy changed since %s was saved; the saved "
                       "policy stays in force (delete the state file to use the file's)",
                       path)
    held = leases(doc, restored, time.time(), path)
    if held:
        logger.info("%d DHCP leases restored from %s", len(held), path)
    restored = _response_restored(doc, restored, network.response, path, logger)
    state = doc.get("response_state")
    try:
        if state is not None:
            AutoResponse(restored.response, state)     # only to check it
    except ResponseError as e:
        raise StateFileError(path, f"its IDS response state is not valid ({e}); fix or "
                                   "delete it") from None
    return restored, changes, held, state


def _response_restored(doc: dict, network: Network, file_response: Response, path: str,
                       logger) -> Network:
    """network with the saved response rules, if they were changed through
    the API (else the file's own, as it says now)."""
    if doc.get("response") in (None, doc.get("file_response")):
        return network
    try:
        response = parse_response(doc["response"])
        network = network.with_response(response)
    except ResponseError as e:
        raise StateFileError(path, f"{e} (the saved response rules do not fit the "
                                   "network file; fix or delete the state file)") from None
    if doc.get("file_response") not in (None, file_response.to_dict()):
        logger.warning("the network file's response rules changed since %s was saved; "
                       "the saved rules stay in force (delete the state file to use the "
                       "file's)", path)
    return network
