"""JUnit XML, the format CI dashboards read: one test case per school.

Every text is made XML-safe first: a character XML 1.0 cannot hold (a control character in a server's message,
say) is written as `\\xNN` / `\\uNNNN`, since ElementTree would emit it raw and no parser would read the file.
"""

from __future__ import annotations

import re
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


# What XML 1.0 cannot hold, even escaped: C0 controls other than tab, LF and CR; surrogates; U+FFFE and U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    return _NOT_XML.sub(lambda m: ascii(m.group())[1:-1], text)


def render_junit(suite_name: str, cases: Sequence[JunitCase], *, duration_s: float, timestamp: datetime) -> str:
    suite = ET.Element(
        "testsuite",
        name=xml_safe(suite_name),
        tests=str(len(cases)),
        failures=str(sum(1 for c in cases if c.failure is not None)),
        errors="0",
        skipped=str(sum(1 for c in cases if c.skipped is not None)),
        time=f"{duration_s:.3f}",
        timestamp=timestamp.isoformat(),
    )
    for c in cases:
        case = ET.SubElement(
            suite, "testcase", classname=xml_safe(c.classname), name=xml_safe(c.name), time=f"{c.time_s:.3f}"
        )
        if c.skipped is not None:
            ET.SubElement(case, "skipped", message=xml_safe(c.skipped))
        elif c.failure is not None:
            failure = ET.SubElement(case, "failure", message=xml_safe(c.failure), type=xml_safe(c.failure_type))
            failure.text = xml_safe(c.details)
        elif c.details:
            ET.SubElement(case, "system-out").text = xml_safe(c.details)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
