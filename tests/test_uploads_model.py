"""GetLog's and GetDiagnostics' uploads alone (chargepoint/model/uploads.py, log_upload.py,
diagnostics.py), built by `build_services` on a real SQLite file with the RPC endpoint as
their link: no Station, socket, thread or worker (as tests/test_model.py). The runtime's
side is played by hand: each `UploadDiagnostics` asked for is answered with `uploaded`."""
from __future__ import annotations

import json

import pytest

from chargepoint import actions as act
from chargepoint.model.uploads import DEFAULT_RETRIES
from tests.test_model import build, online


def uploads(services) -> list[act.UploadDiagnostics]:
    return [a for a in services.effects.take() if isinstance(a, act.UploadDiagnostics)]


def sent(services, rpc, action="LogStatusNotification") -> list[dict]:
    """The CALLs of `action` the endpoint sends, each answered at once by the CSMS."""
    out = []
    while rpc.next_call(services.clock.now, True, services.delivery) is not None:
        for text in rpc.take_outgoing():
            frame = json.loads(text)
            if frame[2] == action:
                out.append(frame[3])
            answered = rpc.receive(json.dumps([3, frame[1], {}]))
            if answered.out.on_result is not None:
                answered.out.on_result(answered.payload)
    return out


@pytest.fixture
def built(tmp_path):
    services, rpc = build(tmp_path)
    online(services, rpc)
    yield services, rpc
    services.store.close()


def test_a_security_log_upload_is_retried_then_ends_in_upload_failure(built):
    services, rpc = built
    logs = services.log_upload
    answer = logs.request("SecurityLog", 5, "ftp://files.example/in/", None, None, 1, 10)
    assert answer["status"] == "Accepted"
    assert answer["filename"].startswith("CP-1-security-log-") and \
        answer["filename"].endswith(".zip")
    (first,) = uploads(services)
    assert (first.kind, first.location, first.file_name) == (
        "security-log", "ftp://files.example/in/", answer["filename"])
    assert sent(services, rpc) == [{"status": "Uploading", "requestId": 5}]
    assert logs.status() == {"status": "Uploading", "requestId": 5}

    logs.uploaded(first.request_id, False, "connection refused", final=False)
    assert not uploads(services) and not sent(services, rpc)
    assert services.timers.when("log-upload") == services.clock.now + 10
    services.timers.fire_due(services.clock.now + 10)
    (second,) = uploads(services)
    assert second == first                       # the same upload, tried again
    logs.uploaded(second.request_id, False, "connection refused", final=False)
    assert sent(services, rpc) == [{"status": "UploadFailure", "requestId": 5}]
    assert logs.status() == {"status": "Idle"}
    assert services.timers.when("log-upload") is None


@pytest.mark.parametrize("cause,final,status", [
    ("unsupported", True, "NotSupportedOperation"),
    ("location", True, "BadMessage"),
    ("permission", False, "PermissionDenied"),
    ("", False, "UploadFailure"),
])
def test_a_failure_is_told_in_the_words_its_cause_has(built, cause, final, status):
    services, rpc = built
    services.log_upload.request("DiagnosticsLog", 9, "x://y", None, None, 0, None)
    (attempt,) = uploads(services)
    assert attempt.kind == "diagnostics"
    sent(services, rpc)
    services.log_upload.uploaded(attempt.request_id, False, "why", final, cause)
    assert sent(services, rpc) == [{"status": status, "requestId": 9}]


def test_a_final_failure_ends_at_once_whatever_retries_are_left(built):
    services, rpc = built
    services.log_upload.request("SecurityLog", 1, "sftp://h/", None, None, 5, 10)
    (attempt,) = uploads(services)
    sent(services, rpc)
    services.log_upload.uploaded(attempt.request_id, False, "scheme", True, "unsupported")
    assert sent(services, rpc) == [{"status": "NotSupportedOperation", "requestId": 1}]
    assert services.timers.when("log-upload") is None


def test_a_second_get_log_cancels_the_first_whose_outcome_is_then_ignored(built):
    services, rpc = built
    logs = services.log_upload
    assert logs.request("SecurityLog", 1, "http://a/", None, None, 0, None)["status"] == \
        "Accepted"
    (old,) = uploads(services)
    replaced = logs.request("DiagnosticsLog", 2, "http://b/", 100.0, 200.0, 0, None)
    assert replaced["status"] == "AcceptedCanceled"
    (new,) = uploads(services)
    assert (new.kind, new.start, new.stop) == ("diagnostics", 100.0, 200.0)
    assert new.request_id != old.request_id
    assert logs.status() == {"status": "Uploading", "requestId": 2}
    logs.uploaded(old.request_id, False, "cut off", final=True)
    assert logs.status() == {"status": "Uploading", "requestId": 2}
    logs.uploaded(new.request_id, True, "", final=False)
    assert sent(services, rpc) == [{"status": "Uploading", "requestId": 1},
                                   {"status": "Uploading", "requestId": 2},
                                   {"status": "Uploaded", "requestId": 2}]


def test_get_log_and_get_diagnostics_run_side_by_side(built):
    services, rpc = built
    name = services.diagnostics.request("ftp://h/d/", None, None, None, None)
    services.log_upload.request("SecurityLog", 3, "ftp://h/l/", None, None, None, None)
    diag, log_ = uploads(services)
    assert services.diagnostics.status == "Uploading" and diag.file_name == name
    # Each takes only its own outcome: the station hands every outcome to both.
    for upload in (services.diagnostics, services.log_upload):
        upload.uploaded(log_.request_id, True, "", False)
    assert services.diagnostics.status == "Uploading"
    assert services.log_upload.status() == {"status": "Idle"}
    assert sent(services, rpc, "DiagnosticsStatusNotification") == [{"status": "Uploading"}]
    for upload in (services.diagnostics, services.log_upload):
        upload.uploaded(diag.request_id, False, "refused", False)
    assert services.timers.when("diagnostics") is not None     # DEFAULT_RETRIES left
    assert DEFAULT_RETRIES == 2


def test_a_status_told_offline_waits_with_its_request_id(tmp_path):
    services, rpc = build(tmp_path)
    services.log_upload.request("SecurityLog", 4, "ftp://h/", None, None, 0, None)
    (attempt,) = uploads(services)
    services.log_upload.uploaded(attempt.request_id, True, "", False)
    notices = services.log_upload.notices
    assert (notices.waiting, notices.details) == ("Uploaded", {"requestId": 4})
    online(services, rpc)
    services.log_upload.online()
    assert sent(services, rpc) == [{"status": "Uploaded", "requestId": 4}]
    assert notices.waiting is None
    services.store.close()
