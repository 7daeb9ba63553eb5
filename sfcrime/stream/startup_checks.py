"""Before the query starts: may these results and this checkpoint be counted on from, against this topic?

Results are added to only by the query, topic and broker they were made from; a damaged checkpoint, one that
lost batches, or a topic recreated or cut short by retention is one line that names the ways on.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from ..clients import check_reachable, open_admin
from ..errors import UserError
from ..kafka_settings import KafkaSettings
from ..results import ResultsStore, identity_clash
from .identity import (checkpoint_damage, checkpoint_offsets, checkpoint_query_id, describe_losses, offsets_gone_back,
                       retention_losses)

log = logging.getLogger(__name__)


def check_results_belong(store: ResultsStore, checkpoint: Path, identity: dict[str, str], settings) -> None:
    """Results are added to only by the query, topic and broker they were made from: one line otherwise.

    The query is its checkpoint's id: a new checkpoint numbers its batches from 0 again, and every batch id
    the results already hold would be skipped. The topic is its id where the broker has topic ids, and
    otherwise its offsets: a partition ending before what the checkpoint has read was recreated.
    """
    meta, where = store.meta(), store.where
    hint = "pass --start-over to discard the results and the checkpoint, or use another --output"
    damage = checkpoint_damage(checkpoint)
    if damage:
        raise UserError(f"the checkpoint is damaged: {damage}; resuming from it could count from a wrong place: "
                        f"restore {checkpoint} from a copy, or pass --start-over to count from the beginning "
                        "(the results go too)")
    query_id = checkpoint_query_id(checkpoint)
    if store.has_batches():
        if query_id is None:
            raise UserError(f"{where} holds results, but the checkpoint {checkpoint} is new or empty: its batch "
                            f"ids would start again at 0 and be skipped as counted; {hint}")
        if meta.get("query_id", query_id) != query_id:
            raise UserError(f"{where} holds results of query {meta['query_id']}, but the checkpoint {checkpoint} "
                            f"is query {query_id}; {hint}")
    elif any((checkpoint / "commits").glob("[0-9]*")):
        raise UserError(f"the checkpoint {checkpoint} has counted batches that the results in {where} do not "
                        f"hold (results deleted?): resuming would skip them; {hint}")
    planned = [int(p.name) for p in (checkpoint / "offsets").glob("[0-9]*") if p.name.isdigit()]
    counted = store.last_batch()
    if counted is not None and query_id is not None and (not planned or max(planned) < counted):
        raise UserError(f"the checkpoint is damaged: {checkpoint} ends before batch {counted}, which the results "
                        "hold (its last batches were deleted); resuming would plan that batch again over other "
                        f"offsets: restore {checkpoint} from a copy, or pass --start-over to count from the "
                        "beginning (the results go too)")
    clash = identity_clash(meta, identity)
    if clash:
        raise UserError(f"{where} holds results of another {clash} (topic {settings.topic!r} at "
                        f"{settings.bootstrap_servers}, recreated or another broker); {hint}")
    if query_id is not None and checkpoint_offsets(checkpoint):
        with open_admin(settings) as admin:
            gone_back = offsets_gone_back(checkpoint, admin.end_offsets())
        if gone_back:
            raise UserError(f"topic {settings.topic!r} at {settings.bootstrap_servers} was recreated or lost data: "
                            f"{gone_back}; {hint}")


def check_retention(store: ResultsStore, checkpoint: Path | None, settings: KafkaSettings, accept: bool) -> bool:
    """Messages deleted from the topic (Kafka's retention) before the job read them: one line naming them and
    the ways on, or, with --accept-data-loss, recorded in the results. True when the sources must skip them."""
    read_to = checkpoint_offsets(checkpoint) if checkpoint is not None else None
    if not read_to:
        return False
    with open_admin(settings) as admin:
        losses = retention_losses(read_to, admin.beginning_offsets())
    if not losses:
        return False
    lost = describe_losses(losses)
    if not accept:
        raise UserError(f"Kafka's retention deleted messages of topic {settings.topic!r} that the job had not read: "
                        f"{lost}; the answers cannot be exact without them: pass --accept-data-loss to count on from "
                        "what is left (the loss is recorded with the results), or --start-over to count what is "
                        "left from the beginning")
    store.record_losses(losses)
    log.warning("counting on without messages Kafka's retention deleted (--accept-data-loss): %s; the answers "
                "say they are short of them", lost)
    return True


def wait_for_topic(settings, why: str, every_s: float = 2.0, heartbeat_s: float = 60.0) -> None:
    """A live job started before the producer waits for its topic, saying so, rather than fail."""
    print(f"waiting: {why}; Ctrl-C stops", file=sys.stderr, flush=True)
    started = last = time.monotonic()
    while settings.topic not in check_reachable(settings):
        time.sleep(every_s)
        if time.monotonic() - last >= heartbeat_s:
            last = time.monotonic()
            print(f"still waiting for topic {settings.topic!r} ({time.monotonic() - started:.0f} s)",
                  file=sys.stderr, flush=True)
    print(f"topic {settings.topic!r} is there: starting", file=sys.stderr, flush=True)


def checkpoint_location(checkpoint: str | None, output: Path) -> str:
    """A local folder, made absolute; a URI (hdfs://, s3a://, file://) passes unchanged, for a cluster
    whose executors must all reach the checkpoint (their state stores write there)."""
    if checkpoint and "://" in checkpoint:
        return checkpoint
    return str((Path(checkpoint) if checkpoint else output / "checkpoint").resolve())
