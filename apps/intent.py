"""The network in force, changed from outside: a policy or inventory change
(REST), a reload of the network file (REST, SIGHUP), and the state file
that keeps such changes across restarts. File I/O here; what the change
means is the fabric's, committing it the shim's."""
from __future__ import annotations

from ryu.lib import hub

from controller import model, store
from controller.policy import PolicyError
from controller.response import ResponseError


def initial(path: str, state_file: str | None, logger) -> dict:
    """What the controller starts with: the network file, and on top what
    the state file saved (policy, run-time VM changes). The Fabric's
    keyword arguments; SystemExit if either file cannot be used."""
    try:
        document = model.read_document(path)
        network = file_network = model.from_document(document, path)
        inventory, leases, response_state = {}, {}, None
        if state_file:
            network, inventory, leases, response_state = store.restore(
                state_file, network, document, logger)
    except (model.NetworkFileError, store.StateFileError) as e:
        raise SystemExit(f"error: {e}") from None
    return {"network": network, "inventory": inventory, "file_document": document,
            "file_policy": file_network.policy, "leases": leases,
            "file_response": file_network.response, "response_state": response_state}


class Intent:
    def __init__(self, fabric, put_in_force, state_file: str | None, logger):
        self.fabric, self.put_in_force = fabric, put_in_force
        self.state_file, self.logger = state_file, logger
        self.write_lock = hub.Semaphore(1)   # a change: build, apply, save, one at a time

    def apply_policy(self, policy) -> dict:
        """Put a new policy in force; PolicyError if the network cannot carry it."""
        return self.put_in_force(self.fabric.network.with_policy(policy))

    def apply_network(self, network, inventory: dict | None = None) -> dict:
        """Put a new network in force (with the run-time VM changes that
        make it, if they change); from a greenthread."""
        return self.put_in_force(network, inventory)

    def save_state(self) -> None:
        """Save the policy and run-time VM changes in force; OSError if it cannot."""
        f = self.fabric
        store.save(self.state_file, f.network.policy, f.file_policy, f.network.source,
                   f.inventory, f.leases, f.network.response, f.file_response,
                   f.response.to_state())

    def reload(self) -> dict:
        """Read the network file again and put only the difference in force,
        hitless. NetworkFileError or PolicyError if it cannot be used, and
        then nothing changes. With write_lock held, from a greenthread."""
        document = model.read_document(self.fabric.network.source)
        network, fresh = self.fabric.from_file(document)
        result = self.apply_network(network)
        if result["ok"]:
            self.fabric.file_document = document
            self.fabric.file_policy, self.fabric.file_response = fresh.policy, fresh.response
            self.logger.info("reloaded %s", network.source)
        return result

    def reload_on_signal(self) -> None:
        with self.write_lock:
            try:
                result = self.reload()
            except (model.NetworkFileError, PolicyError, ResponseError) as e:
                self.logger.error("SIGHUP: not reloaded, nothing changed: %s", e)
                return
            if not result["ok"]:
                self.logger.error("SIGHUP: reload not applied, nothing changed: %s",
                                  result["failed"])
            elif self.state_file:
                self.save_state()
