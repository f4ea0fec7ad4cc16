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
  - Nothing is ever unpickled before its sha256 matches its metadata.
  - O(state=promoted) backs up the active model, swaps the candidate in atomically and keeps
    the last O(keep_backups) backups; promoting what is already active changes nothing.
  - O(state=rolled_back) makes a verified backup active again (O(to=latest) is the newest
    backup older than the active model).
  - O(state=restored) undoes a failed promotion on this host; backup O(to) becomes active
    again without backing up the failed model, and with O(discard_backup) the backup that
    promotion created is removed, so the store ends byte-identical to before.
  - O(state=verified) checks the active model's sha256 against its metadata and, when
    O(expect_sha256) is given, that the host really runs that model. With O(service_url)
    it then waits up to O(service_timeout) seconds until the service's C(/healthz) is
    healthy and reports that sha256, polling from the host itself (one module call, not
    one SSH round trip per attempt), and fails with the service's last answer otherwise.
  - O(state=evaluated) verifies a backup (or the active model), loads it and scores it on
    fresh data without changing anything, so a playbook can refuse a bad rollback.
  - O(state=pruned) removes old backups beyond O(keep_backups).
  - O(state=inspected) diagnoses the store without changing it (active model, interrupted
    promotion, backups, keys) and returns C(diagnosis), the same report as
    C(quantshift-ml doctor), with the command that fixes each problem.
  - Every model is trusted only when its metadata is signed by a key in O(keys) and its
    files match the sha256s it names; an active file that does not check out is never
    the current model; promoting or rolling back moves it to C(models/quarantine/).
  - O(state=locked) / O(state=unlocked) take and release the fleet operation lease (stale
    after O(lease_ttl) seconds) so two retrains or rollbacks never run at once.
version_added: "0.1.0"
author: QuantShift ML ops
requirements:
  - quantshift_ml in the interpreter running the module
options:
  root:
    description: Store root on the host.
    type: path
    default: /opt/quantshift
  state:
    description: Desired state, see the description.
    type: str
    required: true
    choices: [promoted, rolled_back, restored, verified, evaluated, pruned, locked, unlocked,
              inspected]
  keys:
    description:
      - Keys directory on the host (C(trusted/*.pub), and C(signing.key) on the training
        host). Every model is loaded only after its metadata's signature checks out against
        a trusted key there.
    type: path
    default: /etc/quantshift/keys
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
    description: Seconds to wait for the service to report O(expect_sha256).
    type: int
    default: 60
  keep_backups:
    description: Backups to keep.
    type: int
    default: 3
  source:
    description: Market-data source for O(state=evaluated).
    type: str
    choices: [bundled, csv, yfinance]
    default: bundled
  data:
    description: CSV path for O(source=csv).
    type: path
  symbol:
    description: Ticker for O(source=yfinance).
    type: str
    default: SPY
  as_of:
    description: Last bar of the data the model is scored on for O(state=evaluated) (YYYY-MM-DD); default the newest.
    type: str
  min_accuracy:
    description:
      - Floor of the evaluated model's gate metric for O(state=evaluated); RV(evaluation.meets_floor)
        says whether it is met.
      - Default the floor of the model's labeler (docs/model.md; V(0) for C(hmm), V(0.75) for C(rules)).
    type: float
  owner:
    description: Lease owner id for O(state=locked) and O(state=unlocked).
    type: str
  lease_ttl:
    description: Seconds after which a lease left by a dead controller counts as stale.
    type: int
    default: 7200
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
    description: Reports whether the state would change; writes nothing.
  diff_mode:
    support: full
    description: Shows the active version and sha256 before and after.
"""

EXAMPLES = r"""
- name: Promote the staged candidate
  quantshift_model:
    root: /opt/quantshift
    state: promoted
    artifact: /opt/quantshift/models/staging/regime_classifier_20261124-020000.pkl
  vars:
    ansible_python_interpreter: /opt/quantshift/venv/bin/python

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
  quantshift_model:
    state: rolled_back
    to: "20261117-020000"
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
pruned:
  description: Backup versions removed.
  returned: for promoted, rolled_back, pruned, verified with O(prune=true)
  type: list
  elements: str
evaluation:
  description:
    - Version, sha256, accuracy and balanced accuracy of the evaluated model on fresh data.
    - C(metric), C(value), C(floor) and C(meets_floor), the rollback decision against the floor.
  returned: for evaluated
  type: dict
artifact:
  description: Path of the evaluated or restored artifact on the host.
  returned: for evaluated
  type: str
files:
  description: The artifact and the files that travel with it (metadata, compiled ONNX model).
  returned: for evaluated
  type: list
  elements: str
lease:
  description: The lease now held (owner, host, expiry).
  returned: for locked
  type: dict
health:
  description: The service's C(/healthz) answer once it reported O(expect_sha256), and C(attempts).
  returned: for verified with O(service_url)
  type: dict
  sample: {"status": "ok", "version": "20261124-020000", "sha256": "ab12...", "attempts": 3}
"""

import os
import traceback
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

# Only the store (standard library) is imported up front: promote, verify, prune
# and the lease run on every host at each rollout and need neither pandas nor
# scikit-learn, whose import costs seconds. state=evaluated imports them itself.
try:
    from quantshift_ml.errors import IntegrityError, QuantshiftError, UsageError
    from quantshift_ml.store import ModelStore
    from quantshift_ml.store import lease as leases
    from quantshift_ml.store.files import sha256_file
    from quantshift_ml.store.signing import Keyring
except ImportError:
    HAS_QUANTSHIFT = False
    IMPORT_ERROR = traceback.format_exc()
else:
    HAS_QUANTSHIFT = True
    IMPORT_ERROR = None


def _brief(art):
    return None if art is None else {"version": art.version, "sha256": art.sha256}


def _diff(before, after):
    fmt = lambda a: "none\n" if a is None else "%s %s\n" % (a["version"], a["sha256"])
    return {"before": fmt(before), "after": fmt(after),
            "before_header": "active model", "after_header": "active model"}


def _would(before, target):
    """Check-mode answer of a promotion or rollback: what would be active after it."""
    changed = before is None or before["sha256"] != target["sha256"]
    after = target if changed else before
    return {"changed": changed, "previous": before, "current": after,
            "diff": _diff(before, after)}


def run(module, store):
    p = module.params
    state = p["state"]
    if state == "locked":
        if not p["owner"]:
            module.fail_json(msg="state=locked needs owner")
        if module.check_mode:
            return {"changed": False}
        return leases.acquire(store.layout.lease_file, p["owner"], p["lease_ttl"],
                              takeover=p["lease_takeover"], details=p["lease_details"])
    if state == "unlocked":
        if module.check_mode:
            return {"changed": False}
        return leases.release(store.layout.lease_file, p["owner"] or "")
    if state == "verified":
        art = store.verify(store.layout.active_pkl)
        if p["expect_sha256"] and art.sha256 != p["expect_sha256"]:
            raise IntegrityError("active model %s (sha256 %s) is not the expected sha256 %s"
                                 % (art.version, art.sha256, p["expect_sha256"]))
        result = {"changed": False, "current": _brief(art)}
        if p["service_url"]:
            if not p["expect_sha256"]:
                raise UsageError("service_url needs expect_sha256: the sha the service must report")
            from quantshift_ml.healthcheck import wait_for_sha

            result["health"] = wait_for_sha(p["service_url"], p["expect_sha256"],
                                            timeout=p["service_timeout"])
        if p["prune"] and not module.check_mode:
            result["pruned"] = store.prune()
            result["changed"] = bool(result["pruned"])
        return result
    if state == "evaluated":
        from quantshift_ml import operations
        from quantshift_ml.data.sources import make_source

        pkl = (store.layout.active_pkl if p["to"] == "active"
               else store.resolve_backup(p["to"]).pkl)
        source = make_source(p["source"], data=p["data"], symbol=p["symbol"], root=store.layout.root)
        ev = operations.evaluate_artifact(pkl, source, root=store.layout.root,
                                          floor=p["min_accuracy"], as_of=p["as_of"])
        files = [str(pkl), str(pkl.with_suffix(".json"))]
        if pkl.with_suffix(".onnx").exists():
            files.append(str(pkl.with_suffix(".onnx")))
        return {"changed": False, "evaluation": ev, "artifact": str(pkl), "files": files}
    if state == "pruned":
        if module.check_mode:
            return {"changed": False}
        removed = store.prune()
        return {"changed": bool(removed), "pruned": removed}

    if state == "restored":
        if module.check_mode:
            return {"changed": True}
        res = store.restore(p["to"], discard_backup=p["discard_backup"])
        res["diff"] = _diff(res["previous"], res["current"])
        return res

    if state == "inspected":
        from quantshift_ml.doctor import diagnose

        return {"changed": False, "diagnosis": diagnose(store)}

    # the active model's trusted identity: a file that does not check out is no
    # "current" model, so promoting or rolling back onto it always repairs it
    active = store.inspect_active()
    before = active.artifact if active.state == "ok" else None
    if state == "promoted":
        if p["archive"]:
            from quantshift_ml.store.release import release_metadata, unpack_release

            if module.check_mode:
                meta = release_metadata(Path(p["archive"]))
                return _would(_brief(before),
                              {"version": meta.get("version"), "sha256": meta.get("sha256")})
            p["artifact"] = str(unpack_release(Path(p["archive"]), store.layout.staging))
        if not p["artifact"]:
            module.fail_json(msg="state=promoted needs artifact or archive")
        target = store.verify(Path(p["artifact"]))
    else:  # rolled_back
        target = store.verify(store.resolve_backup(p["to"]).pkl)
    if module.check_mode or (before is not None and before.sha256 == target.sha256):
        return _would(_brief(before), _brief(target))
    if state == "promoted":
        res = store.promote(Path(p["artifact"]), prune=p["prune"] is not False)
    else:
        res = store.rollback(p["to"])
    res["diff"] = _diff(res["previous"], res["current"])
    res.setdefault("pruned", [])
    current = store.verify(store.layout.active_pkl)
    if current.sha256 != sha256_file(store.layout.active_pkl):
        raise IntegrityError("active model does not match its metadata after the swap")
    return res


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", default="/opt/quantshift"),
            keys=dict(type="path", default="/etc/quantshift/keys"),
            state=dict(type="str", required=True,
                       choices=["promoted", "rolled_back", "restored", "verified", "evaluated",
                                "pruned", "locked", "unlocked", "inspected"]),
            prune=dict(type="bool"),
            discard_backup=dict(type="bool", default=False),
            artifact=dict(type="path"),
            archive=dict(type="path"),
            to=dict(type="str", default="latest"),
            expect_sha256=dict(type="str"),
            service_url=dict(type="str", default=""),
            service_timeout=dict(type="int", default=60),
            keep_backups=dict(type="int", default=3),
            source=dict(type="str", default="bundled", choices=["bundled", "csv", "yfinance"]),
            data=dict(type="path"),
            symbol=dict(type="str", default="SPY"),
            min_accuracy=dict(type="float"),
            as_of=dict(type="str"),
            owner=dict(type="str"),
            lease_ttl=dict(type="int", default=7200),
            lease_takeover=dict(type="str"),
            lease_details=dict(type="dict", default={}),
        ),
        required_if=[("state", "promoted", ("artifact", "archive"), True),
                     ("state", "locked", ("owner",)),
                     ("state", "restored", ("to",))],
        mutually_exclusive=[("artifact", "archive")],
        supports_check_mode=True,
    )
    if not HAS_QUANTSHIFT:
        module.fail_json(msg=missing_required_lib("quantshift_ml (run with the venv's python)"),
                         exception=IMPORT_ERROR)
    # every store this run opens (evaluate_artifact opens its own) trusts these keys
    os.environ["QUANTSHIFT_KEYS"] = module.params["keys"]
    try:
        store = ModelStore(Path(module.params["root"]), keep_backups=module.params["keep_backups"],
                           keys=Keyring(Path(module.params["keys"])))
        result = run(module, store)
    except QuantshiftError as exc:
        module.fail_json(msg=str(exc), error_type=type(exc).__name__, exit_code=exc.exit_code)
    except ImportError:
        module.fail_json(msg=missing_required_lib("quantshift_ml's dependencies (run with the "
                                                  "venv's python)"),
                         exception=traceback.format_exc())
    except OSError as exc:
        module.fail_json(msg="%s: %s" % (type(exc).__name__, exc), error_type=type(exc).__name__)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
