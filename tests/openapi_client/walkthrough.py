"""The README's curl walkthrough, driven by a client generated from openapi/openapi.json.

Run by scripts/openapi-client.sh with the generated package importable as `eddy_client` and
the base URL of a fresh server as argv[1]. Every answer is checked as the typed model the
generator made for it; any failure exits non-zero.
"""

import json
import sys
from pathlib import Path

from eddy_client import Client
from eddy_client.api.checkpoints import (
    get_checkpoint,
    list_checkpoints,
    restore_checkpoint,
    trigger_checkpoint,
)
from eddy_client.api.events import post_events, post_watermark
from eddy_client.api.output import get_output, stream_output
from eddy_client.api.pipelines import create_pipeline, get_pipeline, list_pipelines
from eddy_client.api.state import get_state
from eddy_client.models import (
    CheckpointDto,
    CheckpointList,
    CheckpointStatus,
    Event,
    EventsAccepted,
    LatestState,
    MapState,
    OutputKind,
    OutputPage,
    PipelineDoc,
    PipelineList,
    PipelineSpecDoc,
    Problem,
    ProblemItemType0,
    ProblemItemType1,
    Restored,
    Session,
    SessionsState,
    StateItem,
    StatePage,
    Trigger,
    WatermarkRequest,
    WatermarkResponse,
    Window,
    WindowsState,
)
from eddy_client.types import File

ROOT = Path(__file__).resolve().parents[2]


def expect(answer, model):
    assert isinstance(answer, model), f"expected {model.__name__}, got {answer!r}"
    return answer


def main(base_url: str) -> None:
    # No token: access is open without a tokens file, and the document says the token is
    # optional, so the plain client is the one to use.
    client = Client(base_url=base_url, raise_on_unexpected_status=True, timeout=30.0)
    spec = PipelineSpecDoc.from_dict(json.loads((ROOT / "examples/clicks.json").read_text()))

    # Create the example pipeline.
    created = expect(create_pipeline.sync(client=client, body=spec), PipelineDoc)
    assert created.name == "clicks" and len(created.operators) == 6
    assert created.status.events == 0 and created.status.watermark is None
    again = expect(create_pipeline.sync(client=client, body=spec), Problem)
    assert (again.status, again.code, again.type_) == (409, "pipeline_exists", "/problems/pipeline_exists")

    # Post a few clicks: a JSON array…
    clicks = [
        {"user_id": "ann", "ts": 1700000000000, "type": "login", "page": "/home"},
        {"user_id": "ann", "ts": 1700000030000, "type": "cart", "page": "/p/7", "product_id": "p7", "qty": 2},
        {"user_id": "bob", "ts": 1700000100000, "type": "view", "page": "/home"},
    ]
    body = [Event.from_dict(c) for c in clicks]
    accepted = expect(post_events.sync("clicks", client=client, body=body), EventsAccepted)
    assert (accepted.accepted, accepted.first_offset, accepted.last_offset) == (3, 1, 3)

    # …one JSON object, with an Idempotency-Key (a string header), twice…
    one = Event.from_dict({"user_id": "cid", "ts": 1700000100500, "type": "view", "page": "/home"})
    first = post_events.sync_detailed("clicks", client=client, body=one, idempotency_key="k-1")
    retry = post_events.sync_detailed("clicks", client=client, body=one, idempotency_key="k-1")
    assert expect(first.parsed, EventsAccepted).first_offset == 4
    assert expect(retry.parsed, EventsAccepted).first_offset == 4
    assert retry.headers.get("idempotent-replayed") == "true"

    # …and NDJSON, as a text body.
    ndjson = "\n".join(
        json.dumps(e)
        for e in [
            {"user_id": "bob", "ts": 1700000101000, "type": "cart", "page": "/p/9", "product_id": "p9", "qty": 1},
            {"user_id": "dan", "ts": 1700000102000, "type": "purchase", "page": "/pay", "amount": 12.5},
        ]
    )
    nd = File(payload=ndjson.encode(), mime_type="application/x-ndjson")
    accepted = expect(post_events.sync("clicks", client=client, body=nd), EventsAccepted)
    assert (accepted.accepted, accepted.first_offset, accepted.last_offset) == (2, 5, 6)

    # A bad batch: the problem's errors come back typed, by index.
    bad = [Event.from_dict({"user_id": "eve", "ts": 1, "page": "/x"}), Event.from_dict({"ts": 2, "page": "/x"})]
    problem = expect(post_events.sync("clicks", client=client, body=bad), Problem)
    assert problem.code == "invalid_events" and problem.type_ == "/problems/invalid_events"
    item = problem.errors[0]
    assert isinstance(item, ProblemItemType1) and item.index == 1, problem.errors

    # A bad spec: errors by field.
    bad_spec = PipelineSpecDoc.from_dict({"name": "x", "key": "/k", "operators": [{"name": "s", "kind": "session", "gap": "5 s"}]})
    problem = expect(create_pipeline.sync(client=client, body=bad_spec), Problem)
    assert problem.status == 422 and isinstance(problem.errors[0], ProblemItemType0)
    assert problem.errors[0].field == "operators[0].gap", problem.errors

    # Query ann's open session, the page-view windows of /home, bob's cart and ann's login.
    answer = expect(get_state.sync("clicks", "sessions", client=client, key="ann"), StateItem)
    sessions = expect(answer.value, SessionsState).sessions
    assert [(s.start, s.end, s.duration_ms, s.events) for s in sessions] == [(1700000000000, 1700000030000, 30000, 2)]
    answer = expect(get_state.sync("clicks", "page_views", client=client, key="/home"), StateItem)
    windows = expect(answer.value, WindowsState).windows
    assert [(w.start, w.closed) for w in windows] == [(1699999980000, True), (1700000100000, False)]
    assert windows[0].additional_properties == {} and windows[0].count == 1
    cart = expect(get_state.sync("clicks", "cart", client=client, key="bob").value, MapState)
    assert cart.entries.additional_properties == {"p9": 1}
    login = expect(get_state.sync("clicks", "last_login", client=client, key="ann").value, LatestState)
    assert (login.value, login.time) == (1700000000000, 1700000000000)
    page = expect(get_state.sync("clicks", "sessions", client=client, limit=2), StatePage)
    assert [i.key for i in page.items] == ["ann", "bob"] and page.next_cursor
    missing = expect(get_state.sync("clicks", "sessions", client=client, key="zed"), Problem)
    assert missing.code == "key_not_found"

    # Take a checkpoint, list them, get one.
    checkpoint = expect(trigger_checkpoint.sync("clicks", client=client), CheckpointDto)
    assert checkpoint.status == CheckpointStatus.COMPLETED and checkpoint.trigger == Trigger.MANUAL
    assert checkpoint.input_offset == 6 and checkpoint.events == 6
    listed = expect(list_checkpoints.sync("clicks", client=client), CheckpointList)
    assert [c.id for c in listed.items] == [checkpoint.id]
    got = expect(get_checkpoint.sync("clicks", checkpoint.id, client=client), CheckpointDto)
    assert got.id == checkpoint.id

    # The pipeline and the list carry the status, with the checkpoint typed.
    pipeline = expect(get_pipeline.sync("clicks", client=client), PipelineDoc)
    assert pipeline.status.events == 6 and pipeline.status.wal_offset == 6
    assert expect(pipeline.status.last_checkpoint, CheckpointDto).id == checkpoint.id
    assert pipeline.status.keys.additional_properties["sessions"] == 4
    pipelines = expect(list_pipelines.sync(client=client), PipelineList)
    assert [p.name for p in pipelines.items] == ["clicks"]

    # Restore it after one more event: that event is discarded.
    later = Event.from_dict({"user_id": "fay", "ts": 1700000103000, "type": "view", "page": "/home"})
    expect(post_events.sync("clicks", client=client, body=later), EventsAccepted)
    restored = expect(restore_checkpoint.sync("clicks", checkpoint.id, client=client), Restored)
    assert (restored.restored, restored.discarded_events) == (checkpoint.id, 1)
    assert get_pipeline.sync("clicks", client=client).status.events == 6

    # End the stream and read what closed: a page, then the same as Server-Sent Events.
    wm = expect(post_watermark.sync("clicks", client=client, body=WatermarkRequest(time="max")), WatermarkResponse)
    assert wm.watermark == 9223372036854775807
    out = expect(get_output.sync("clicks", client=client, after=0), OutputPage)
    kinds = {r.type_ for r in out.records}
    assert kinds == {OutputKind.SESSION_CLOSED, OutputKind.WINDOW_CLOSED}, kinds
    for record in out.records:
        model = Session if record.type_ == OutputKind.SESSION_CLOSED else Window
        expect(record.value, model)
    # The stream is endless unless bounded: `limit` makes it an answer a generated client reads.
    text = expect(stream_output.sync("clicks", client=client, after=0, limit=2), str)
    events = [json.loads(line[len("data: "):]) for line in text.splitlines() if line.startswith("data: ")]
    assert [e["offset"] for e in events] == [r.offset for r in out.records[:2]], text
    # Last-Event-ID is a string header: resume after the first record.
    text = stream_output.sync("clicks", client=client, last_event_id=str(out.records[0].offset), limit=1)
    assert f"id: {out.records[1].offset}\n" in text, text
    print(f"walkthrough passed: {len(out.records)} output records")


if __name__ == "__main__":
    main(sys.argv[1])
