"""The ``consentgate`` command line. The DAG's tasks call the same subcommands.

Exit status: 0 published (or the step succeeded); 2 bad input or configuration, with a
one-line reason; 3 validation failed, nothing published; 1 an unexpected internal error
(reported by type only, since Spark's messages can quote data values).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import traceback
from datetime import UTC, datetime

from transforms.errors import ConsentgateError, SchemaError, ValidationFailed, describe, unreadable_file
from transforms.lake import Lake, check_run_id, parse_run_date
from transforms.steps import STEPS


def _lake(args) -> Lake:
    return Lake.at(args.lake)


def _say(event: str, **fields) -> None:
    """One machine-readable line per step: counts and paths only."""
    print(json.dumps({"event": event, **fields}, default=str, sort_keys=True), flush=True)


def cmd_generate(args) -> int:
    from transforms.generate import generate_lake
    from transforms.session import get_session

    lake = _lake(args)
    spark = get_session(lake, "consentgate-generate")
    summary = generate_lake(
        spark,
        lake,
        customers=args.customers,
        orders=args.orders,
        seed=args.seed,
        run_date=parse_run_date(args.run_date),
    )
    _say("generated", lake=lake.root, **summary.__dict__)
    return 0


def _load(args):
    from transforms.policy import load_policy

    policy = load_policy(args.policy)
    run_id = check_run_id(args.run_id) if getattr(args, "run_id", None) else None
    return policy, _lake(args), run_id


def _keys_for(policy):
    from transforms.keys import load_run_keys

    # Every run needs the HMAC key (pseudonyms and erasure tombstones are keyed); the
    # encryption key only when a rule encrypts.
    return load_run_keys(needs_encryption=policy.needs_encryption_key)


def _spark(lake, step, dataset):
    from transforms.session import get_session

    return get_session(lake, f"consentgate-{step}-{dataset}")


def _step_enforce(policy, lake, run_date, run_id, full=False) -> None:
    from transforms.enforce import run_enforce

    keys = _keys_for(policy)  # before Spark starts: a run without a key stops at once and writes nothing
    spark = _spark(lake, "enforce", policy.dataset)
    result = run_enforce(spark, policy, lake, run_date, run_id, keys, full=full)
    _say(
        "enforced",
        dataset=policy.dataset,
        run_id=run_id,
        rows_in=result.rows_in,
        rows_out=result.rows_out,
        staging_path=result.staging_path,
        seconds=result.seconds,
    )


def _step_validate(policy, lake, run_date, run_id) -> None:
    from transforms.keys import load_hmac_key
    from transforms.validate import run_validate

    key = load_hmac_key()  # the consent cross-check recomputes pseudonyms; before Spark starts
    # Great Expectations takes seconds to import: it loads while Spark starts, not after.
    # (A failed import raises again, in this thread, where validation imports it.)
    importing = threading.Thread(target=importlib.import_module, args=("great_expectations",), daemon=True)
    importing.start()
    spark = _spark(lake, "validate", policy.dataset)
    importing.join()
    state = run_validate(spark, policy, lake, run_id, key)
    _say("validated", dataset=policy.dataset, run_id=run_id, evaluated=state["evaluated"], seconds=state["seconds"])


def _step_publish(policy, lake, run_date, run_id) -> None:
    from transforms.publish import run_publish

    state = run_publish(_spark(lake, "publish", policy.dataset), policy, lake, run_id)
    _say(
        "published",
        dataset=policy.dataset,
        run_id=run_id,
        table=state["table"],
        published_path=state["published_path"],
        seconds=state["seconds"],
    )


_STEP_ACTIONS = {"enforce": _step_enforce, "validate": _step_validate, "publish": _step_publish}


def _report(lake, dataset, run_id) -> dict:
    from transforms.report import write_report

    path, report = write_report(lake, dataset, run_id)
    _say(
        "reported",
        dataset=dataset,
        run_id=run_id,
        report=path,
        published=report["published"],
        rows_in=report.get("rows_in"),
        totals=report.get("totals"),
    )
    return report


def _run_step(step, policy, lake, run_date, run_id, full=False) -> None:
    """One step, after clearing what earlier attempts of this step and later ones left,
    recording the one-line reason if it stops on bad input or configuration."""
    from transforms.steps import record_failure, start_step

    # What the report of a run that stopped still says of it.
    identity = {"run_date": run_date.isoformat(), "policy_path": policy.path, "policy_sha256": policy.sha256}
    with _locked(lake, policy.dataset, run_id, step):
        start_step(lake, policy.dataset, run_id, step)
        try:
            if step in ("validate", "publish"):
                _require_the_enforced_policy(policy, lake, run_id, step)
            if step == "enforce":
                _step_enforce(policy, lake, run_date, run_id, full=full)
            else:
                _STEP_ACTIONS[step](policy, lake, run_date, run_id)
        except ValidationFailed:
            raise  # the validate step has recorded its own results
        except ConsentgateError as err:
            record_failure(lake, policy.dataset, run_id, step, str(err), **identity, **getattr(err, "state", {}))
            raise
        except Exception as err:
            damaged = unreadable_file(err) or _damaged_input(lake, policy, step, run_id)
            if damaged is not None:
                # A damaged input, found when its pages were read: bad input, not a fault of ours.
                reason = SchemaError(f"{damaged[0]}: cannot be read ({damaged[1]})")
                record_failure(lake, policy.dataset, run_id, step, str(reason), **identity)
                raise reason from None
            # The type only: the message may quote data. The report and the DAG's task say it.
            record_failure(lake, policy.dataset, run_id, step, f"internal error: {describe(err)}", **identity)
            raise


def _damaged_input(lake, policy, step, run_id) -> tuple[str, str] | None:
    """After an unexpected error: whether one of the step's input files is damaged."""
    from transforms.damage import damaged_file, step_inputs

    folders = step_inputs(lake, policy, step, run_id)
    if not folders:
        return None
    try:
        return damaged_file(_spark(lake, step, policy.dataset), folders)
    except Exception:  # noqa: BLE001 - a session that cannot read any more: the error stands
        return None


def _require_the_enforced_policy(policy, lake, run_id, step) -> None:
    """Validation builds its suite from the policy, publication trusts it: a policy edited
    since the run's enforce step would check or publish the output against other rules."""
    from transforms.errors import StepStateError
    from transforms.steps import load_step

    enforced = load_step(lake, policy.dataset, run_id, "enforce", required=False)
    if enforced is not None and enforced.get("policy_sha256") not in (None, policy.sha256):
        raise StepStateError(
            f"{policy.path}: changed since run {run_id} was enforced (sha256 {enforced['policy_sha256'][:12]}… "
            f"then, {policy.sha256[:12]}… now); {step} refuses: run enforce again"
        )


def _locked(lake, dataset, run_id, step):
    """The dataset's lock (see transforms/dataset_lock.py), saying whom it waits for."""
    from transforms.dataset_lock import dataset_lock

    def waiting(holder: str) -> None:
        _say("waiting_for_lock", dataset=dataset, run_id=run_id, step=step, held_by=holder)

    return dataset_lock(lake, dataset, f"{run_id} {step}", on_wait=waiting)


def cmd_step(args) -> int:
    if args.command == "report" and args.policy is None and args.run_id is None:
        from transforms.report import write_index

        _say("index_written", index=write_index(_lake(args)))
        return 0
    if args.policy is None or args.run_id is None:
        raise ConsentgateError(f"consentgate {args.command}: --policy and --run-id are required")
    policy, lake, run_id = _load(args)
    if args.command == "report":
        _require_a_run(lake, policy.dataset, run_id)
        _report(lake, policy.dataset, run_id)
    else:
        _run_step(args.command, policy, lake, parse_run_date(args.run_date), run_id, full=getattr(args, "full", False))
    return 0


def _require_a_run(lake, dataset: str, run_id: str) -> None:
    """A report for a run id no step ever started (a typo) would be a run that never
    happened, listed as the dataset's latest in the index and by ``status``."""
    from transforms.storage import list_names

    if not list_names(lake.staging_run(dataset, run_id)):
        raise ConsentgateError(f"{lake.staging_run(dataset, run_id)}: no run {run_id} of {dataset} to report")


def cmd_run(args) -> int:
    """enforce -> validate -> publish -> report in one process, as the DAG does."""
    from transforms.steps import load_step

    policy, lake, run_id = _load(args)
    run_date = parse_run_date(args.run_date)
    run_id = run_id or f"{run_date.isoformat()}_{datetime.now(UTC):%Y%m%dT%H%M%S}"
    try:
        with _locked(lake, policy.dataset, run_id, "run"):  # the whole run, not only each step
            for step in STEPS:
                _run_step(step, policy, lake, run_date, run_id, full=args.full)
    finally:
        if load_step(lake, policy.dataset, run_id, "enforce", required=False) is not None:
            _report(lake, policy.dataset, run_id)
    return 0


def cmd_decrypt(args) -> int:
    from transforms.decrypt import run_decrypt
    from transforms.keys import load_encryption_key

    policy, lake, _ = _load(args)
    key = load_encryption_key()  # before Spark starts
    spark = _spark(lake, "decrypt", policy.dataset)
    out = args.out if "://" in args.out else os.path.abspath(args.out)
    entry = run_decrypt(spark, policy, lake, key, out, args.reason, args.version)
    _say("decrypted", **{k: entry[k] for k in ("dataset", "version", "columns", "rows", "out", "key_fingerprint")})
    return 0


def cmd_rollback(args) -> int:
    from transforms.versions import rollback

    lake = _lake(args)
    with _locked(lake, args.dataset, "rollback", "rollback"):
        entry = rollback(_spark(lake, "rollback", args.dataset), lake, args.dataset, args.to, args.reason)
    _say("rolled_back", dataset=args.dataset, to=entry["to"], previous=entry["from"], judged_at=entry["judged_at"])
    return 0


def cmd_status(args) -> int:
    """What the last run of a dataset did, and where its outputs are."""
    from transforms.lake import is_local, local_path
    from transforms.publish import current_path
    from transforms.storage import list_names, read_json

    lake = _lake(args)
    report_path = args.report
    if report_path is None:
        folder = lake.path("reports", args.dataset)

        # By when each was written, as it says (a file's own time is lost on a copied or
        # remote lake), then, within its second, by the file's time where there is one; a
        # report rebuilt later for an earlier run counts as that late.
        def written(path: str) -> tuple[str, float, str]:
            local = is_local(path) and os.path.exists(local_path(path))
            try:
                said = (read_json(path) or {}).get("reported_at") or ""
            except ValueError:  # a damaged report: listed as the oldest
                said = ""
            return said, os.path.getmtime(local_path(path)) if local else 0.0, path

        reports = sorted(written(f"{folder}/{name}") for name in list_names(folder) if name.endswith(".json"))
        if not reports:
            raise ConsentgateError(f"{folder}: no run report yet")
        report_path = reports[-1][2]
    report = read_json(report_path)
    print(f"run {report['run_id']} of {report['dataset']} (run date {report.get('run_date')})")
    if report.get("rows_in") is None:
        print(f"  stopped: {report.get('error')}")
    else:
        print(f"  rows_in {report['rows_in']}  ->  " + "  ".join(f"{a} {n}" for a, n in report["totals"].items()))
        for reason, by_action in report["counts"].items():
            for action, n in by_action.items():
                if n:
                    print(f"    {reason:<24} {action:<12} {n:>10}")
        validation = report["validation"]
        failed = f", failed: {', '.join(validation['failed'])}" if validation["failed"] else ""
        outcome = "passed" if validation["success"] else "FAILED"
        print(f"  validation: {outcome} ({validation['evaluated']} expectations{failed})")
        plan = report.get("incremental")
        if plan:
            from transforms.report_html import incremental_summary

            print(f"  {incremental_summary(plan)}")
    for field in ("publish_error", "superseded_by", "cleanup_error"):
        if report.get(field):
            print(f"  {field}: {report[field]}")
    share = report.get("share")
    if share:
        print(f"  published: {report['published']}  shared with: {share['recipient']} ({share['subjects']} customers)")
        print(f"  export:      {current_path(lake, report['dataset'])}")
    else:
        print(f"  published: {report['published']}  table: {report.get('table')}")
        print(f"  clean data:  {current_path(lake, report['dataset'])}")
    print(f"  report:      {report_path}")
    print(f"  quarantine:  {report.get('quarantine_path')}")
    print(f"  {_current_age(lake, report['dataset'])}")
    return 0


def _current_age(lake: Lake, dataset: str) -> str:
    """What analysts (or a recipient) read now and how old its judgement is: consent
    withdrawn since is not in it until a run publishes again."""
    from datetime import UTC, datetime

    from transforms.lake import judged_at_marker
    from transforms.publish import current_version
    from transforms.storage import read_text

    version = current_version(lake, dataset)
    if version is None:
        return "current:     nothing published"
    judged = (read_text(judged_at_marker(lake.clean_version(dataset, version))) or "").strip()
    try:
        days = max(0, (datetime.now(UTC) - datetime.fromisoformat(judged)).days)  # (a run of today: t is tonight)
    except ValueError:
        return f"current:     {version} (judged at an unrecorded instant)"
    return f"current:     {version}, judged at {judged}: {days} days ago; consent changes since are not in it"


def cmd_explain(args) -> int:
    import dataclasses

    from transforms.explain import explain_subject, render_text
    from transforms.keys import load_run_keys
    from transforms.policy import find_policies, load_policy

    paths = [args.policy] if args.policy else find_policies(args.policies)
    policies = [load_policy(path) for path in paths]
    if not policies:
        raise ConsentgateError(f"{args.policies}: no policy files")
    keys = load_run_keys(needs_encryption=False)  # before Spark starts
    lake = _lake(args)
    run_date = parse_run_date(args.run_date)
    explanations = explain_subject(_spark(lake, "explain", "subject"), lake, policies, args.subject, run_date, keys)
    if args.json:
        print(json.dumps([dataclasses.asdict(e) for e in explanations], indent=2, sort_keys=True))
    else:
        print("\n".join(render_text(explanations, run_date)))
    return 0


def cmd_lint(args) -> int:
    from transforms.lint import lint

    checked, findings = lint(args.paths, args.lake)
    for finding in findings:
        print(finding)
    if checked == 0:
        raise ConsentgateError(f"{', '.join(args.paths)}: no policy files (*.yml, *.yaml) to lint")
    print(f"consentgate lint: {checked} policies, {len(findings)} findings", file=sys.stderr)
    return 2 if findings else 0


def cmd_register(args) -> int:
    from transforms.register import stale_files, write_register

    if args.check:
        stale = stale_files(args.policies, args.out, args.controller)
        if stale:
            raise ConsentgateError(
                f"{', '.join(stale)}: stale; run `consentgate register --policies {args.policies} --out {args.out}`"
            )
        _say("register_current", out=args.out)
        return 0
    _say("register_written", files=write_register(args.policies, args.out, args.lake, args.controller))
    return 0


_FULL_HELP = "judge every period again, even when an incremental run could reuse the current version's"


def _yes_no(text: str) -> bool:
    """``--full`` alone, or ``--full=true|false`` (as the DAG passes its parameter)."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return text.lower() == "true"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consentgate", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write a synthetic lake (Faker + Spark)")
    generate.add_argument("--lake", required=True)
    generate.add_argument("--customers", type=int, default=100_000)
    generate.add_argument("--orders", type=int, default=1_000_000)
    generate.add_argument("--seed", type=int, default=42)
    generate.add_argument("--run-date", default="2026-11-28", help="the date histories are built around")
    generate.set_defaults(handler=cmd_generate)

    run = commands.add_parser("run", help="enforce, validate, publish and report one dataset")
    run.add_argument("--policy", required=True)
    run.add_argument("--lake", required=True)
    run.add_argument("--run-date", required=True)
    run.add_argument("--run-id", help="default: <run date>_<UTC time of the call>")
    run.add_argument("--full", nargs="?", const=True, default=False, type=_yes_no, help=_FULL_HELP)
    run.set_defaults(handler=cmd_run)

    for step in (*STEPS, "report"):
        is_report = step == "report"
        help_text = "the DAG's report task; with --lake alone, rebuild reports/index.html" if is_report else None
        sub = commands.add_parser(step, help=help_text or f"the DAG's {step} task")
        sub.add_argument("--policy", required=not is_report)
        sub.add_argument("--lake", required=True)
        sub.add_argument("--run-date", required=not is_report)
        sub.add_argument("--run-id", required=not is_report)
        if step == "enforce":
            sub.add_argument("--full", nargs="?", const=True, default=False, type=_yes_no, help=_FULL_HELP)
        sub.set_defaults(handler=cmd_step)

    decrypt = commands.add_parser(
        "decrypt", help="write a decrypted copy of a published version (authorised use; logged)"
    )
    decrypt.add_argument("--policy", required=True)
    decrypt.add_argument("--lake", required=True)
    decrypt.add_argument("--out", required=True, help="a new folder for the decrypted Parquet copy")
    decrypt.add_argument("--reason", required=True, help="ticket or request reference, for the decryption log")
    decrypt.add_argument("--version", help="default: the current version")
    decrypt.set_defaults(handler=cmd_decrypt)

    rollback = commands.add_parser("rollback", help="make a retained version of clean.<dataset> current again")
    rollback.add_argument("--dataset", required=True)
    rollback.add_argument("--lake", required=True)
    rollback.add_argument("--to", required=True, help="the version (a folder under clean/<dataset>/)")
    rollback.add_argument("--reason", required=True, help="why, for reports/<dataset>/rollbacks.jsonl")
    rollback.set_defaults(handler=cmd_rollback)

    status = commands.add_parser("status", help="summarise a dataset's last run report")
    status.add_argument("--lake", required=True)
    status.add_argument("--dataset", required=True, help="a dataset, or a share's <dataset>-to-<recipient>")
    status.add_argument("--report", help="a report file instead of the latest")
    status.set_defaults(handler=cmd_status)

    explain = commands.add_parser(
        "explain", help="what the pipeline does with one subject's rows in every dataset, and why"
    )
    explain.add_argument("--subject", required=True, help="the customer id, as the customer gave it")
    explain.add_argument("--lake", required=True)
    explain.add_argument("--run-date", required=True)
    explain.add_argument("--policies", default="dags/policies")
    explain.add_argument("--policy", help="one policy instead of every policy in --policies")
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(handler=cmd_explain)

    lint = commands.add_parser("lint", help="check policy files for problems, one line each (exit 2 if any)")
    lint.add_argument("paths", nargs="+", help="policy files or folders of them")
    lint.add_argument("--lake", help="also check the declared columns against each source's schema (local lake)")
    lint.set_defaults(handler=cmd_lint)

    register = commands.add_parser("register", help="write the record of processing activities (Markdown, HTML)")
    register.add_argument("--policies", default="dags/policies")
    register.add_argument("--out", default="docs")
    register.add_argument("--lake", help="also name the keys of each dataset's current published version")
    register.add_argument("--check", action="store_true", help="exit 2 if the files under --out are stale")
    register.add_argument(
        "--controller",
        help="who is responsible (controller, DPO, transfers, security measures); default: controller.yml beside "
        "the policies' folder, whose facts read 'not stated' when it is absent",
    )
    register.set_defaults(handler=cmd_register)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConsentgateError as err:
        print(f"consentgate: {err}", file=sys.stderr)
        return err.exit_code
    except Exception as err:  # noqa: BLE001 - the message may quote data; report the type only
        if os.environ.get("CONSENTGATE_DEBUG") == "1":
            traceback.print_exc()
        print(f"consentgate: internal error: {describe(err)} (set CONSENTGATE_DEBUG=1 for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
