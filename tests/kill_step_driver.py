"""The firmware process (`python -m chargepoint ...`), killed (SIGKILL) at the Nth durable
step after the CSMS sent a frame naming an action: what a power cut at that moment leaves.

    KILL_ARMED_BY=InstallCertificate KILL_AT=3 python -m tests.kill_step_driver run --config …

A step is the edge of something that reaches the disk: the moment before and the moment
after each outermost database commit (chargepoint/store.py), and before and after each
rename into the charger's key directory (chargepoint/key_files.py). Each is printed
(`step N: …`) when it is reached; the KILL_AT-th kills the process there. KILL_AT 0 never
kills: its output counts the steps. Nothing is changed but the kill: the firmware runs its
own code paths throughout.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from chargepoint import key_files, store
from chargepoint.cli import main
from chargepoint.protocol.rpc import RpcEndpoint

ARMED_BY = os.environ["KILL_ARMED_BY"]
KILL_AT = int(os.environ.get("KILL_AT", "0"))
state = {"armed": False, "steps": 0}


def step(what: str) -> None:
    if not state["armed"]:
        return
    state["steps"] += 1
    print(f"step {state['steps']}: {what}", flush=True)
    if state["steps"] == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


receive = RpcEndpoint.receive


def armed_receive(self, text: str):
    if not state["armed"] and f'"{ARMED_BY}"' in text:
        state["armed"] = True
        print(f"armed by {ARMED_BY}", flush=True)
    return receive(self, text)


commit_exit = store._Transaction.__exit__


def counted_exit(self, exc_type, exc, tb):
    outermost = self.store._depth == 1 and exc_type is None
    if outermost:
        step("before a commit")
    result = commit_exit(self, exc_type, exc, tb)
    if outermost:
        step("committed")
    return result


replace = os.replace


def counted_replace(src, dst, *args, **kwargs):
    inside = Path(dst).parent.name == key_files.DIRECTORY
    if inside:
        step(f"before writing {Path(dst).name}")
    result = replace(src, dst, *args, **kwargs)
    if inside:
        step(f"wrote {Path(dst).name}")
    return result


RpcEndpoint.receive = armed_receive
store._Transaction.__exit__ = counted_exit
os.replace = counted_replace

if __name__ == "__main__":
    code = main(sys.argv[1:])
    print(f"steps: {state['steps']}", flush=True)
    raise SystemExit(code)
