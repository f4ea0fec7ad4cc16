#!/usr/bin/python
# Copyright: QuantShift
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: a thin adapter over ``quantshift_ml.store`` (promote, rollback, verify...)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: quantshift_model
short_description: Promote, roll back, verify, evaluate or prune the QuantShift model on a host
description:
  - Manages the model store under O(root) with the C(quantshift_ml) package; all logic lives
    in the package, this module only adapts it.
  - O(state=promoted) backs up the active model, swaps the candidate in atomically and keeps
    the last O(keep_backups) backups; promoting what is already active changes nothing.
  - O(state=rolled_back) makes a verified backup active again (O(to=latest) is the newest
    backup older than the active model that checks out; the newer ones that do not are
    returned in RV(skipped)).
  - O(state=restored) undoes a failed promotion on this host; backup O(to) becomes active
    again without backing up the failed model, and with O(discard_backup) the backup that
    promotion created is removed, so the store ends byte-identical to before.
  - O(state=verified) checks the active model (and that it is O(expect_sha256)); with
    O(service_url) it then polls the service's C(/healthz) from the host itself (one module
    call, not one SSH round trip per attempt) until it reports that sha256, or fails with
    the service's last answer after O(service_timeout) seconds.
  - O(state=evaluated) verifies a backup (or the active model), loads it and scores it on
    fresh data without changing anything, so a playbook can refuse a bad rollback.
  - O(state=pruned) removes old backups beyond O(keep_backups).
  - O(state=inspected) returns C(diagnosis), the report of C(quantshift-ml doctor) (active
    model, interrupted promotion, backups, keys, the fix of each problem); changes nothing.
  - Every model is trusted only when its metadata is signed by a key in O(keys) and its
    files match the sha256s it names; an active file that does not check out is never
    the current model; promoting or rolling back moves it to C(models/quarantine/).
  - O(state=locked) / O(state=unlocked) take and release the fleet operation lease (stale
    after O(lease_ttl) seconds) so two retrains or rollbacks never run at once; with
    O(lease_report) a lease held by another run is returned in RV(held) instead of failing.
  - O(state=packed) checks release O(version)'s files in O(path) (sha256s; the signature
    too with O(trusted_keys)) and packs them into C(release-VERSION.tar) there, RV(release),
    what the rollout ships (the controller runs it on its own copy).
version_added: "0.1.0"
author: QuantShift ML ops
extends_documentation_fragment:
  - quantshift
  - quantshift.source
options:
  state:
    description: Desired state, see the description.
    type: str
    required: true
    choices: [promoted, rolled_back, restored, verified, evaluated, pruned, locked, unlocked,
              inspected, packed]
  artifact:
    description: Candidate pickle on the host for O(state=promoted) (metadata beside it).
    type: path
  archive:
    description:
      - Instead of O(artifact), a release archive on the host for O(state=promoted) (an
        uncompressed tar of C(regime_classifier_VERSION.pkl), C(.json) and C(.onnx), as the
        rollout ships it, so one transfer per host instead of three).
      - Its members must be exactly those files; they are unpacked into C(models/staging/)
        all or nothing, the archive is deleted, and the pickle is promoted after the usual
        sha256 checks. In check mode the archive is only read.
    type: path
  to:
    description: C(latest), C(active) (only for O(state=evaluated)) or a backup version.
    type: str
    default: latest
  prune:
    description:
      - With O(state=promoted), prune old backups right away (default V(true)). A fleet
        rollout sets it false and prunes once the host is healthy, so a restore loses
        nothing.
      - With O(state=verified), prune only when set to V(true), and only after every check
        passed (the store, and the service when O(service_url) is set); the default is
        V(false) there, as a check changes nothing.
    type: bool
  discard_backup:
    description: With O(state=restored), remove the backup O(to) once it is active again.
    type: bool
    default: false
  expect_sha256:
    description: With O(state=verified), fail unless the active model has this sha256.
    type: str
  service_url:
    description:
      - With O(state=verified) and O(expect_sha256), base URL of the regime service on the
        host (for example C(http://127.0.0.1:8787)); empty skips the service check.
    type: str
    default: ""
  service_timeout:
    description: Seconds to wait for the service to report O(expect_sha256); default the package's.
    type: int
  as_of:
    description: Last bar of the data the model is scored on for O(state=evaluated) (YYYY-MM-DD); default the newest.
    type: str
  min_accuracy:
    description:
      - Floor of the evaluated model's gate metric for O(state=evaluated); RV(evaluation.meets_floor)
        says whether it is met.
      - Default the floor of the model's labeler (C(quantshift_ml.defaults.GATE_BY_LABELER), docs/model.md).
    type: float
  force:
    description:
      - With O(state=evaluated), decide a rollback to a backup below the floor as allowed
        (RV(evaluation.decision), from C(quantshift_ml.training.gate.rollback_decision)).
    type: bool
    default: false
  path:
    description: With O(state=packed), the directory holding the release's files (the archive is written there).
    type: path
  version:
    description: With O(state=packed), the release version in O(path).
    type: str
  trusted_keys:
    description:
      - With O(state=packed), public keys (PEM) the release's signature is checked against;
        empty checks the sha256s only (every host checks the signature again before use).
    type: list
    elements: str
    default: []
  owner:
    description: Lease owner id for O(state=locked) and O(state=unlocked).
    type: str
  lease_ttl:
    description: Seconds after which a lease left by a dead controller counts as stale; default the package's.
    type: int
  lease_report:
    description:
      - With O(state=locked), return a lease held by another run in RV(held) (RV(acquired) false)
        instead of failing, so the controller can check whether its holder is dead.
    type: bool
    default: false
  lease_takeover:
    description:
      - Owner id of a lease whose controller process is known to be dead; that lease is
        taken over at once instead of waiting for O(lease_ttl).
    type: str
  lease_details:
    description: Extra facts stored in the lease (controller host and pid).
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
    description: A dry run of the store; reports whether the state would change, writes nothing.
  diff_mode:
    support: full
    description: Shows the active version and sha256 before and after.
"""

EXAMPLES = r"""
- name: Pack a release kept on the controller
  quantshift_model:
    state: packed
    path: /srv/artifacts/20261124-020000
    version: "20261124-020000"
  delegate_to: localhost
  register: packed

- name: Promote a release archive copied to the host
  quantshift_model:
    state: promoted
    archive: /opt/quantshift/models/staging/release-20261124-020000.tar
    prune: false

- name: Check the host runs the candidate and its service serves it, then prune backups
  quantshift_model:
    state: verified
    expect_sha256: "{{ candidate.sha256 }}"
    service_url: http://127.0.0.1:8787
    service_timeout: 60
    prune: true

- name: Roll back to a named backup
  quantshift_model: {state: rolled_back, to: "20261117-020000"}
"""

RETURN = r"""
backup_created:
  description: Whether the operation copied the previous model into backups/.
  returned: for promoted, rolled_back
  type: bool
previous:
  description: Active version and sha256 before the operation (null when none).
  returned: for promoted, rolled_back
  type: dict
  sample: {"version": "20261117-020000", "sha256": "ab12..."}
current:
  description: Active version and sha256 after the operation.
  returned: for promoted, rolled_back, verified
  type: dict
skipped:
  description:
    - Backups passed over on the way to O(to=latest) because they do not check out (unsigned,
      signed with an untrusted key, or files that do not match their signed sha256s), each
      C(version) and C(reason); empty for a named version or O(to=active).
  returned: for rolled_back, evaluated
  type: list
  elements: dict
  sample: [{"version": "20261117-020000", "reason": "...sha256 ... does not match metadata ..."}]
pruned:
  description: Backup versions removed.
  returned: for promoted, rolled_back, pruned, verified with O(prune=true)
  type: list
  elements: str
evaluation:
  description:
    - Version, sha256, accuracy and balanced accuracy of the evaluated model on fresh data.
    - C(metric), C(value), C(floor), C(meets_floor); C(decision) (allowed, forced, message).
  returned: for evaluated
  type: dict
artifact:
  description: Path of the evaluated artifact on the host.
  returned: for evaluated
  type: str
files:
  description: The artifact and its release's other files (metadata, compiled ONNX model).
  returned: for evaluated
  type: list
  elements: str
lease:
  description: The lease now held (owner, host, expiry).
  returned: for locked, when acquired
  type: dict
acquired:
  description: Whether this run holds the lease now.
  returned: for locked
  type: bool
held:
  description: The lease of another run that refused this one (with O(lease_report)), else null.
  returned: for locked
  type: dict
release:
  description: The packed release, C(version), C(sha256), C(archive) (path), C(files), C(signature_checked).
  returned: for packed
  type: dict
  sample: {"version": "20261124-020000", "sha256": "ab12...", "archive": "/srv/artifacts/20261124-020000/release-20261124-020000.tar"}
health:
  description: The service's C(/healthz) answer once it reported O(expect_sha256), and C(attempts).
  returned: for verified with O(service_url)
  type: dict
  sample: {"status": "ok", "version": "20261124-020000", "sha256": "ab12...", "attempts": 3}
"""

from pathlib import Path

from ansible.module_utils.quantshift_common import make_source, new_module, run_module

# Each state imports what it needs: the rollout's states run on every host and skip
# pandas and scikit-learn (seconds to import); only state=evaluated loads them.
ARGUMENT_SPEC = dict(
    state=dict(type="str", required=True,
               choices=["promoted", "rolled_back", "restored", "verified", "evaluated",
                        "pruned", "locked", "unlocked", "inspected", "packed"]),
    prune=dict(type="bool"),
    discard_backup=dict(type="bool", default=False),
    artifact=dict(type="path"),
    archive=dict(type="path"),
    to=dict(type="str", default="latest"),
    expect_sha256=dict(type="str"),
    service_url=dict(type="str", default=""),
    service_timeout=dict(type="int"),
    min_accuracy=dict(type="float"),
    force=dict(type="bool", default=False),
    owner=dict(type="str"),
    lease_ttl=dict(type="int"),
    lease_takeover=dict(type="str"),
    lease_details=dict(type="dict", default={}),
    lease_report=dict(type="bool", default=False),
    path=dict(type="path"),
    version=dict(type="str"),
    trusted_keys=dict(type="list", elements="str", default=[], no_log=False),
)


def _with_diff(res):
    """The store's answer with the active model before and after, as Ansible's diff."""
    fmt = lambda a: "none\n" if a is None else "%s %s\n" % (a["version"], a["sha256"])
    res["diff"] = {"before": fmt(res.get("previous")), "after": fmt(res.get("current")),
                   "before_header": "active model", "after_header": "active model"}
    res.setdefault("pruned", [])
    return res


def locked(module, store, p, dry):
    from quantshift_ml import defaults
    from quantshift_ml.store import lease

    ttl = defaults.LEASE_TTL if p["lease_ttl"] is None else p["lease_ttl"]
    return lease.acquire_or_report(store.layout.lease_file, p["owner"], ttl, dry_run=dry,
                                   takeover=p["lease_takeover"], details=p["lease_details"],
                                   report=p["lease_report"])


def unlocked(module, store, p, dry):
    from quantshift_ml.store.lease import release

    return {"changed": False} if dry else release(store.layout.lease_file, p["owner"] or "")


def verified(module, store, p, dry):
    from quantshift_ml.ops.operations import verify_deployed

    return verify_deployed(store, p["expect_sha256"], service_url=p["service_url"],
                           service_timeout=p["service_timeout"], prune=bool(p["prune"]),
                           dry_run=dry)


def evaluated(module, store, p, dry):
    from quantshift_ml.ops import operations
    from quantshift_ml.store.release import release_files

    choice = None if p["to"] == "active" else store.choose_backup(p["to"])
    pkl = store.layout.active_pkl if choice is None else choice.artifact.pkl
    ev = operations.evaluate_artifact(pkl, make_source(module), root=store.layout.root,
                                      floor=p["min_accuracy"], as_of=p["as_of"],
                                      force=p["force"])
    return {"changed": False, "evaluation": ev, "artifact": str(pkl),
            "files": [str(f) for f in release_files(pkl)],
            "skipped": [] if choice is None else choice.skipped}


def packed(module, store, p, dry):
    from quantshift_ml.store.release import pack_release, release_pkl
    from quantshift_ml.store.signing import Keyring, load_public

    directory = Path(p["path"])
    trusted = dict(load_public(pem.encode(), "trusted_keys") for pem in p["trusted_keys"])
    keys = Keyring(directory, _trusted=trusted) if trusted else None
    return {"release": pack_release(release_pkl(directory, p["version"]), directory,
                                    keys=keys, dry_run=dry)}


def pruned(module, store, p, dry):
    removed = store.prune(dry_run=dry)
    return {"changed": bool(removed), "pruned": removed}


def restored(module, store, p, dry):
    return _with_diff(store.restore(p["to"], discard_backup=p["discard_backup"], dry_run=dry))


def inspected(module, store, p, dry):
    from quantshift_ml.ops.doctor import diagnose

    return {"changed": False, "diagnosis": diagnose(store)}


def promoted(module, store, p, dry):
    artifact = p["artifact"]
    if p["archive"]:
        from quantshift_ml.store.artifact import Artifact
        from quantshift_ml.store.release import release_metadata, unpack_release

        if dry:  # the archive is only read: what it would make active
            meta = release_metadata(Path(p["archive"]))
            return _with_diff(store.would_install(Artifact(Path(p["archive"]), meta)))
        artifact = str(unpack_release(Path(p["archive"]), store.layout.staging))
    return _with_diff(store.promote(Path(artifact), prune=p["prune"] is not False, dry_run=dry))


def rolled_back(module, store, p, dry):
    return _with_diff(store.rollback(p["to"], dry_run=dry))


STATES = {f.__name__: f for f in (locked, unlocked, verified, evaluated, packed, pruned,
                                  restored, inspected, promoted, rolled_back)}


def main():
    module = new_module(
        ARGUMENT_SPEC, source=True,
        required_if=[("state", "promoted", ("artifact", "archive"), True),
                     ("state", "locked", ("owner",)),
                     ("state", "restored", ("to",)),
                     ("state", "packed", ("path", "version"))],
        mutually_exclusive=[("artifact", "archive")])

    def action():
        from quantshift_ml.store import ModelStore
        from quantshift_ml.store.signing import Keyring

        p = module.params
        store = ModelStore(Path(p["root"]), keep_backups=p["keep_backups"],
                           keys=Keyring(Path(p["keys"])))
        return STATES[p["state"]](module, store, p, module.check_mode)

    run_module(module, action)


if __name__ == "__main__":
    main()
