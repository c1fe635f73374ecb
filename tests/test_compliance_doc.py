"""docs/compliance.md stays true: every OCTT charge-point test case once, in the OCTT's
order, each naming a test that exists (read with ast, nothing imported) or saying why the
case does not apply to this charger."""
import ast
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "compliance.md"

#: The charge-point test cases of the OCTT test-case document (FINAL 2024-04), in its order,
#: with their names as it writes them (its own spelling kept). The document is not shipped.
OCTT = [
    ("TC_001_CS", "Cold Boot Charge Point"),
    ("TC_002_CS", "Cold Boot Charge Point - Pending"),
    ("TC_003_CS", "Regular Charging Session - Plugin First"),
    ("TC_004_1_CS", "Regular Charging Session – Identification First"),
    ("TC_004_2_CS", "Regular Charging Session – Identification First - ConnectionTimeOut"),
    ("TC_068_CS", "Stop transaction - IdTag in StopTransaction matches IdTag in StartTransaction"),
    ("TC_069_CS",
     "Stop transaction - ParentIdTag in StopTransaction matches ParentIdTag in StartTransaction"),
    ("TC_005_1_CS",
     "EV Side Disconnected - StopTransactionOnEVSideDisconnect = true - "
     "UnlockConnectorOnEVSideDisconnect = true"),
    ("TC_005_2_CS",
     "EV Side Disconnected - StopTransactionOnEVSideDisconnect = true - "
     "UnlockConnectorOnEVSideDisconnect = false"),
    ("TC_005_3_CS",
     "EV Side Disconnected - StopTransactionOnEVSideDisconnect = false - "
     "UnlockConnectorOnEVSideDisconnect = false"),
    ("TC_007_CS", "Regular Start Charging Session – Cached Id"),
    ("TC_061_CS", "Clear Authorization Data in Authorization Cache"),
    ("TC_010_CS", "Remote Start Charging Session – Cable Plugged in First"),
    ("TC_011_1_CS", "Remote Start Charging Session – Remote Start First"),
    ("TC_011_2_CS", "Remote Start Charging Session – Time Out"),
    ("TC_012_CS", "Remote Stop Charging Session"),
    ("TC_013_CS", "Hard Reset Without transaction"),
    ("TC_014_CS", "Soft Reset Without Transaction"),
    ("TC_015_CS", "Hard Reset With Transaction"),
    ("TC_016_CS", "Soft Reset With Transaction"),
    ("TC_017_1_CS", "Unlock connector - no charging session running (Not fixed cable)"),
    ("TC_017_2_CS", "Unlock connector - no charging session running (Fixed cable)"),
    ("TC_018_1_CS", "Unlock Connector - With Charging Session (Not fixed cable)"),
    ("TC_018_2_CS", "Unlock Connector - With Charging Session (Fixed cable)"),
    ("TC_019_CS", "Retrieve configuration"),
    ("TC_021_CS", "Change/set Configuration"),
    ("TC_070_CS", "Sampled Meter Values"),
    ("TC_071_CS", "Clock-aligned Meter Values"),
    ("TC_023_CS", "Start Charging Session – Authorize invalid"),
    ("TC_024_CS", "Start Charging Session - Lock Failure"),
    ("TC_026_CS", "Remote Start Charging Session – Rejected"),
    ("TC_027_CS", "Remote start transaction - connector id shall not be 0"),
    ("TC_028_CS", "Remote Stop Transaction – Rejected"),
    ("TC_030_CS", "Unlock Connector – Unlock Failure"),
    ("TC_031_CS", "Unlock Connector – Unknown Connector"),
    ("TC_032_1_CS",
     "Power failure boot charging point - configured to stop transaction(s) before going down"),
    ("TC_032_2_CS", "Power failure boot charging point-configured to stop transaction(s)"),
    ("TC_034_CS", "Power Failure with Unavailable Status"),
    ("TC_036_CS", "Connection Loss During Transaction"),
    ("TC_037_1_CS", "Offline Start Transaction - Valid IdTag"),
    ("TC_037_2_CS",
     "Offline Start Transaction - Invalid IdTag - StopTransactionOnInvalidId = false"),
    ("TC_037_3_CS",
     "Offline Start Transaction - Invalid IdTag - StopTransactionOnInvalidId = true"),
    ("TC_038_CS", "Offline Stop Transaction"),
    ("TC_039_CS", "Offline Transaction"),
    ("TC_040_1_CS", "Configuration key - NotSupported"),
    ("TC_040_2_CS", "Configuratoin key - Invalid value"),
    ("TC_041_CS", "Fault Behavior"),
    ("TC_042_1_CS", "Get Local List Version (not supported)"),
    ("TC_042_2_CS", "Get Local List Version (empty)"),
    ("TC_043_CS", "Send Local Authorization List"),
    ("TC_043_1_CS", "Send Local Authorization List - NotSupported"),
    ("TC_043_2_CS", "Send Local Authorization List - VersionMismatch"),
    ("TC_043_3_CS", "Send Local Authorization List - Failed"),
    ("TC_008_CS", "Regular Start Charging Session – Id in Local Authorization List"),
    ("TC_044_1_CS", "Firmware Update - Download and Install"),
    ("TC_044_2_CS", "Firmware Update - Download Failed"),
    ("TC_044_3_CS", "Firmware Update - Installation Failed"),
    ("TC_045_1_CS", "Get Diagnostics"),
    ("TC_045_2_CS", "Get Diagnostics - Upload Failed"),
    ("TC_046_1_CS", "Reservation of a Connector - Local start transaction"),
    ("TC_046_2_CS", "Reservation of a Connector - Remote start transaction"),
    ("TC_047_CS", "Reservation of a Connector - Expire"),
    ("TC_048_1_CS", "Reservation of a Connector - Faulted"),
    ("TC_048_2_CS", "Reservation of a Connector - Occupied"),
    ("TC_048_3_CS", "Reservation of a Connector - Unavailable"),
    ("TC_048_4_CS", "Reservation of a Connector - Rejected"),
    ("TC_049_CS", "Reservation of a Charge Point - Transaction"),
    ("TC_050_1_CS", "Reservation of a Charge Point - Faulted"),
    ("TC_050_2_CS", "Reservation of a Charge Point - Occupied"),
    ("TC_050_3_CS", "Reservation of a Charge Point - Unavailable"),
    ("TC_050_4_CS", "Reservation of a Charge Point - Rejected"),
    ("TC_051_CS", "Cancel Reservation"),
    ("TC_052_CS", "Cancel Reservation - Rejected"),
    ("TC_053_CS", "Use a reserved Connector with parentIdTag"),
    ("TC_054_CS", "Trigger Message"),
    ("TC_055_CS", "Trigger Message - Rejected"),
    ("TC_056_CS", "Central Smart Charging - TxDefaultProfile"),
    ("TC_057_CS", "Central Smart Charging - TxProfile"),
    ("TC_058_1_CS", "Central Smart Charging - No ongoing transaction"),
    ("TC_058_2_CS", "Central Smart Charging - Wrong transactionId"),
    ("TC_082_CS", "Central Smart Charging - TxDefaultProfile - with ongoing transaction"),
    ("TC_066_CS", "Get Composite Schedule"),
    ("TC_067_CS", "Clear Charging Profile"),
    ("TC_072_CS", "Stacking Charging Profiles"),
    ("TC_059_CS", "Remote Start Transaction with Charging Profile"),
    ("TC_060_CS", "Remote Start Transaction with Charging Profile - Rejected"),
    ("TC_062_CS", "Data Transfer to a Charge Point"),
    ("TC_073_CS", "Update Charge Point Password for HTTP Basic Authentication"),
    ("TC_074_CS", "Update Charge Point Certificate by request of Central System"),
    ("TC_075_1_CS", "Install a certificate on the Charge Point - ManufacturerRootCertificate"),
    ("TC_075_2_CS", "Install a certificate on the Charge Point - CentralSystemRootCertificate"),
    ("TC_076_CS", "Delete a specific certificate from the Charge Point"),
    ("TC_077_CS", "Invalid ChargePointCertificate Security Event"),
    ("TC_078_CS", "Invalid CentralSystemCertificate Security Event"),
    ("TC_079_CS", "Get Security Log"),
    ("TC_080_CS", "Secure Firmware Update"),
    ("TC_081_CS", "Secure Firmware Update - Invalid Signature"),
    ("TC_083_CS", "Upgrade security profile"),
    ("TC_084_CS", "Downgrade security profile - Rejected"),
    ("TC_085_CS", "Basic Authentication - Valid username/password combination"),
    ("TC_086_CS", "TLS - server-side certificate - Valid certificate"),
    ("TC_087_CS", "TLS - Client-side certificate - valid certificate"),
]

ROW = re.compile(r"^\| (TC_[0-9A-Z_]+) \| (.+?) \| (.+) \|$")
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)(?:\[([^\]`]*)\])?`")
NOT_APPLICABLE = re.compile(r"^Not applicable: \S.{20,}")


def rows() -> list[tuple[str, str, str]]:
    return [m.groups() for line in DOC.read_text().splitlines() if (m := ROW.match(line))]


@lru_cache(maxsize=None)
def defined_tests(path: str) -> dict[str, frozenset[str]]:
    """The test functions a test module defines (at any depth), each with the pytest ids of
    the cases its `parametrize` decorators list as plain literals."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    return {node.name: frozenset(literal_case_ids(node)) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test_")}


def literal_case_ids(func: ast.FunctionDef):
    """pytest's id of each case written as a literal of strings and numbers (as pytest
    makes it: the values joined by '-'); other cases are left out."""
    for deco in func.decorator_list:
        if isinstance(deco, ast.Call) and ast.unparse(deco.func).endswith("parametrize") \
                and len(deco.args) >= 2 and isinstance(deco.args[1], (ast.List, ast.Tuple)):
            for case in deco.args[1].elts:
                try:
                    value = ast.literal_eval(case)
                except ValueError:
                    continue
                values = value if isinstance(value, tuple) else (value,)
                if all(isinstance(v, (str, int, float)) for v in values):
                    yield "-".join(str(v) for v in values)


def test_the_octt_list_is_whole():
    ids = [tc for tc, _ in OCTT]
    assert len(ids) == len(set(ids)) == 102
    assert min(ids) == "TC_001_CS" and max(ids) == "TC_087_CS"


def test_no_case_appears_twice():
    twice = [tc for tc, n in Counter(tc for tc, _, _ in rows()).items() if n > 1]
    assert not twice


def test_every_case_is_there_in_the_octts_order():
    ids = [tc for tc, _, _ in rows()]
    expected = [tc for tc, _ in OCTT]
    missing = [tc for tc in expected if tc not in ids]
    unknown = [tc for tc in ids if tc not in expected]
    assert not missing and not unknown, (missing, unknown)
    assert ids == expected, next((i, got, want) for i, (got, want)
                                 in enumerate(zip(ids, expected)) if got != want)


def test_each_case_has_the_octts_name():
    names = dict(OCTT)
    wrong = [(tc, name, names[tc]) for tc, name, _ in rows()
             if tc in names and name != names[tc]]
    assert not wrong


def test_every_named_test_exists():
    absent = []
    for tc, _, tests in rows():
        for path, name, case in TEST_REF.findall(tests):
            defined = defined_tests(path) if (ROOT / path).is_file() else {}
            if name not in defined or (case and case not in defined[name]):
                absent.append((tc, f"{path}::{name}" + (f"[{case}]" if case else "")))
    assert not absent


def test_every_case_names_a_test_or_says_why_it_does_not_apply():
    bare = [tc for tc, _, tests in rows()
            if not TEST_REF.search(tests) and not NOT_APPLICABLE.match(tests)]
    assert not bare


def test_the_page_is_linked_from_the_readme_and_the_security_page():
    assert "(docs/compliance.md)" in (ROOT / "README.md").read_text()
    assert "(compliance.md)" in (ROOT / "docs" / "security.md").read_text()
