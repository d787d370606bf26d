"""JUnit XML, the format CI dashboards read: one test case per school."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class JunitCase:
    name: str
    classname: str
    time_s: float
    failure: str | None = None  # message; the case failed
    failure_type: str = "failure"
    details: str = ""  # failure body, or system-out for a passing case
    skipped: str | None = None  # message; the case was skipped


def render_junit(suite_name: str, cases: Sequence[JunitCase], *, duration_s: float, timestamp: datetime) -> str:
    suite = ET.Element(
        "testsuite",
        name=suite_name,
        tests=str(len(cases)),
        failures=str(sum(1 for c in cases if c.failure is not None)),
        errors="0",
        skipped=str(sum(1 for c in cases if c.skipped is not None)),
        time=f"{duration_s:.3f}",
        timestamp=timestamp.isoformat(),
    )
    for c in cases:
        case = ET.SubElement(suite, "testcase", classname=c.classname, name=c.name, time=f"{c.time_s:.3f}")
        if c.skipped is not None:
            ET.SubElement(case, "skipped", message=c.skipped)
        elif c.failure is not None:
            failure = ET.SubElement(case, "failure", message=c.failure, type=c.failure_type)
            failure.text = c.details
        elif c.details:
            ET.SubElement(case, "system-out").text = c.details
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
