"""A looped step is one script; handlers run on a marker; notify leaves markers."""

from __future__ import annotations

from bake.compile.steps import compile_handler, compile_step, marker
from bake.recipe.models import Handler, Step


def test_a_looped_template_is_one_script_with_an_upload_per_item() -> None:
    items = [Step.model_validate({"template": {"src": "t.j2", "dest": f"/etc/{n}.conf"}}) for n in ("a", "b")]
    step = compile_step(2, items, [b"A", b"B"])
    assert step.script_name == "03-template"
    assert [(u.name, u.remote, u.content) for u in step.uploads] == [
        ("03-template-1-a.conf", "/tmp/bake-03-template-1-a.conf", b"A"),
        ("03-template-2-b.conf", "/tmp/bake-03-template-2-b.conf", b"B"),
    ]
    assert step.script.count("# item ") == 2 and step.script.count("install -D") == 2


def test_notify_leaves_markers_only_when_something_changed() -> None:
    step = compile_step(0, [Step.model_validate({"shell": "true", "notify": "h"})], [None], [marker(4)])
    before_body = step.script.split("trap bake_done EXIT\n")[0]
    assert ": >/tmp/bake-notify/05" in before_body
    assert 'if [ "$BAKE_CHANGED" = 1 ]; then\n    mkdir -p /tmp/bake-notify' in before_body


def test_a_handler_runs_its_body_only_when_notified_and_cleans_up() -> None:
    handler = Handler.model_validate({"name": "reload", "file": {"dest": "/etc/x", "content": "x"}})
    h = compile_handler(4, handler, None)
    assert h.script_name == "05-handler" and h.title == "handler reload"
    head, body = h.script.split("rm -f /tmp/bake-notify/05\n", 1)
    assert "if [ ! -e /tmp/bake-notify/05 ]; then" in head and "rm -f /tmp/bake-05-handler-x" in head
    assert "install -D" in body and "install -D" not in head
