"""The style agent: findings and conclusions rendered into a hospital template.

A template is a data file (``templates/<id>.yaml``, published to the store under
``report-templates/<id>/<version>``): its sections in order, what fills each (the perception
step's findings or the reasoning step's conclusions) and one phrasing rule per assertion. Style
adds no content: each sentence is one finding or one conclusion in the template's words, and it
keeps the ids of the findings and citations it came from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.report.model import ASSERTIONS, Finding, Section, Sentence
from medxiaohe.storage import ArtifactStore, publish, read_file, resolve

PREFIX = "report-templates"
BUILTIN = Path(__file__).parent / "templates"
DEFAULT = "chest-xray"
SOURCES = ("findings", "conclusions")


@dataclass(frozen=True)
class TemplateSection:
    title: str
    source: str  # findings or conclusions
    order: tuple[str, ...] = ASSERTIONS


@dataclass(frozen=True)
class Template:
    id: str
    version: str
    name: str
    sections: tuple[TemplateSection, ...]
    phrasing: dict[str, str]  # assertion -> rule with {text} and {side}


@dataclass(frozen=True)
class Conclusion:
    """What the reasoning agent concluded, the findings it rests on, and the citations (their
    positions in the report's citations) that support it."""

    text: str
    finding_ids: tuple[str, ...] = ()
    citations: tuple[int, ...] = ()


def parse_template(template_id: str, text: str, version: str) -> Template:
    try:
        data = yaml.safe_load(text)
        sections = tuple(
            TemplateSection(str(s["title"]), str(s["from"]), tuple(s.get("order", ASSERTIONS)))
            for s in data["sections"]
        )
        phrasing = {a: str(data["phrasing"][a]) for a in ASSERTIONS}
        name = str(data["name"])
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise InvalidInput(f"template {template_id!r} is malformed: {exc}") from None
    for section in sections:
        if section.source not in SOURCES or not set(section.order) <= set(ASSERTIONS):
            raise InvalidInput(f"template {template_id!r}: section {section.title!r} is malformed")
    return Template(template_id, version, name, sections, phrasing)


def publish_builtin_templates(store: ArtifactStore) -> dict[str, str]:
    """Each shipped template as a version in the store (its content's; idempotent); id ->
    version."""
    versions = {}
    for path in sorted(BUILTIN.glob("*.yaml")):
        manifest = publish(store, f"{PREFIX}/{path.stem}", {"template.yaml": path.read_bytes()})
        versions[path.stem] = manifest.version
    return versions


def load_template(store: ArtifactStore, template_id: str) -> Template:
    """The latest published version of a template; NotFound for an unknown one."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,99}", template_id):
        raise InvalidInput("a template id has 1..100 lower-case letters, digits, '.', '_' or '-'")
    try:
        manifest = resolve(store, f"{PREFIX}/{template_id}")
    except NotFound:
        raise NotFound(f"no report template {template_id!r}") from None
    text = read_file(store, manifest, "template.yaml").decode()
    return parse_template(template_id, text, manifest.version)


def phrase(rule: str, finding: Finding) -> str:
    """One finding in the rule's words: its text, and its side unless the text says it."""
    text = finding.text.strip().rstrip(".;,").strip()
    if finding.assertion == "absent":
        text = re.sub(r"^(?:no|without)\s+", "", text, flags=re.I)
    side = finding.laterality
    if side and re.search(rf"\b{side}\b", text, re.I):
        side = ""
    sentence = rule.format(text=text, side=f"{side} " if side else "")
    return sentence[:1].upper() + sentence[1:]


def render(
    template: Template, findings: list[Finding], conclusions: list[Conclusion]
) -> list[Section]:
    sections = []
    for part in template.sections:
        if part.source == "findings":
            ranked = sorted(
                (f for f in findings if f.assertion in part.order),
                key=lambda f: part.order.index(f.assertion),
            )
            sentences = [
                Sentence(phrase(template.phrasing[f.assertion], f), (f.id,)) for f in ranked
            ]
        else:
            sentences = [
                Sentence(_sentence(c.text), c.finding_ids, c.citations) for c in conclusions
            ]
        sections.append(Section(part.title, tuple(s for s in sentences if s.text)))
    return sections


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return ""
    text = text[:1].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."
