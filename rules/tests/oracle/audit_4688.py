"""Which process_creation rules fire on Security 4688 records, by pySigma with
its `windows-audit` pipeline (the shared oracle uses the sysmon pipeline,
which routes process_creation to Sysmon 1 only).

  SIGMA_ORACLE_DIR=shared/tools/sigma-oracle /tmp/oracle/bin/python \
      audit_4688.py shared/data/evtx shared/data/sigmahq out.json

Decides Picket's Security 4688 renames (rules/src/windows.rs, SECURITY_4688):
on the shared EVTX set (44 records of 4688) it fires 5 rules, 2 of them in
rules/ (c8da0dfd lsass clone, d21374ff wmiprvse spawning; the latter needs
LogonId -> SubjectLogonId), and none needs User, IntegrityLevel or
ParentProcessId renamed.
"""
import sys, json, glob, os, collections
sys.path.insert(0, os.environ.get("SIGMA_ORACLE_DIR", os.path.join(os.path.dirname(__file__), "../../../../shared/tools/sigma-oracle")))
import oracle
from sigma.collection import SigmaCollection
from sigma.backends.sqlite import sqliteBackend
from sigma.pipelines.windows import windows_logsource_pipeline, windows_audit_pipeline
root, sigma, out = sys.argv[1], sys.argv[2], sys.argv[3]
rows, failed = oracle.read_evtx_dir(root)
rows = [r for r in rows if str(r.get("EventID")) == "4688" and (r.get("Channel") or "").lower() == "security"]
print("4688 rows", len(rows), file=sys.stderr)
con = oracle.load_table(rows)
backend = sqliteBackend(processing_pipeline=windows_audit_pipeline() + windows_logsource_pipeline())
stats = collections.Counter(); fired = {}
for d in oracle.RULE_DIRS:
    for path in sorted(glob.glob(f"{sigma}/{d}/**/*.yml", recursive=True)):
        try:
            col = SigmaCollection.from_yaml(open(path).read()); rule = col.rules[0]
            if (rule.logsource.product or "") != "windows" or rule.logsource.category != "process_creation":
                continue
            q = backend.convert(col)[0]
        except Exception as e:
            stats["nc"] += 1; continue
        keys = oracle.run_query(con, q, stats)
        if keys: fired[str(rule.id)] = {"path": os.path.relpath(path, sigma), "events": sorted(keys)}
print(dict(stats), file=sys.stderr)
json.dump(fired, open(out, "w"), indent=0, sort_keys=True)
