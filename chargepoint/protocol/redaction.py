"""What of a frame may be logged: the AuthorizationKey's value never appears in a log, nor
the password of a URL (an UpdateFirmware or GetDiagnostics location such as
`ftp://user:password@host/path`).

The key's name is matched in any case (the CSMS may spell it so, see ocpp_keys.key_id),
whatever the order of the JSON members or the escapes that spell it.
"""
from __future__ import annotations

import json
import re
from typing import Any

from chargepoint.ocpp_keys import key_id

#: The password of a URL: scheme://user:PASSWORD@host
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@\"']*:)[^@/\s\"']*@")
_SECRET = re.compile(r'("key"\s*:\s*"(?i:AuthorizationKey)"\s*,\s*"value"\s*:\s*)"(?:[^"\\]|\\.)*"')


def _hide_secret(node: Any) -> bool:
    """Blank the value of every {"key": "AuthorizationKey", "value": ...} in a parsed frame
    (the key's name in any case: the CSMS may spell it so, see ocpp_keys.key_id)."""
    if isinstance(node, dict):
        name = node.get("key")
        found = isinstance(name, str) and key_id(name) == "authorizationkey" and "value" in node
        if found:
            node["value"] = "***"
        children = list(node.values())
    elif isinstance(node, list):
        found, children = False, node
    else:
        return False
    for child in children:
        found = _hide_secret(child) or found
    return found


def hide_url_passwords(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\1***@", text) if "://" in text and "@" in text else text


def redact(text: str) -> str:
    """A frame as it may be logged: the AuthorizationKey value never appears, whatever the
    order of the JSON members or the escapes that spell the key; nor a URL's password."""
    text = hide_url_passwords(text)
    if "authorizationkey" not in text.lower() and "\\u" not in text:
        return text
    try:
        frame = json.loads(text)
        found = _hide_secret(frame)
    except (ValueError, RecursionError):
        # Not JSON (refused unread): the key-first spelling is still blanked.
        return _SECRET.sub(r'\1"***"', text)
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":")) if found else text
