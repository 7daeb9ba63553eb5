"""What a result was measured on, and where results are written."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from .charts import tuning_chart


def machine() -> dict:
    import pyspark

    from sfcrime.clients import library_versions
    from sfcrime.local import class_archive
    from sfcrime.local.jars import KAFKA_VERSION
    from sfcrime.local.kafka import DEFAULT_HEAP

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "pyspark": pyspark.__version__, "librdkafka": library_versions()["librdkafka"],
            "spark_class_archive": class_archive.launch() is not None,
            "broker": f"Apache Kafka {KAFKA_VERSION} (KRaft, one node, on disk, -Xmx{DEFAULT_HEAP})"}


def save(report: dict, path: Path, results_dir: Path) -> None:
    path.write_text(json.dumps(report, indent=2))
    latest_path = results_dir / "latest.json"  # the newest result of each benchmark, whichever run made it
    latest = json.loads(latest_path.read_text()) if latest_path.exists() else {}
    for section, value in report.items():
        if section != "machine":
            latest[section] = dict(value, machine=report["machine"]) if isinstance(value, dict) else \
                {"runs": value, "machine": report["machine"]}
    latest_path.write_text(json.dumps(latest, indent=2))
    if "tuning" in report:
        tuning_chart(report["tuning"], results_dir / "tuning.png")
