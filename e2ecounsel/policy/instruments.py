"""``screening/<id>.toml``: the screening instruments (PHQ-9, GAD-7), items, scale and bands."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from e2ecounsel.policy.model import Band, Instrument, Item
from e2ecounsel.policy.toml import Run, Table


def load_instruments(
    run: Run, ids: Sequence[str], languages: Sequence[str]
) -> dict[str, Instrument]:
    out: dict[str, Instrument] = {}
    for ident in ids:
        inst = _load_instrument(run, ident, languages)
        if inst is not None:
            out[ident] = inst
    folder = run.root / "screening"
    for extra in sorted(p.stem for p in folder.glob("*.toml")):
        if extra not in ids:
            run.notes.append(
                f"screening/{extra}.toml: not listed in service.toml screening.instruments; "
                "not used"
            )
    return out


def _load_instrument(run: Run, ident: str, languages: Sequence[str]) -> Instrument | None:
    f = run.file(f"screening/{ident}.toml")
    data = f.parse(run.root / "screening" / f"{ident}.toml")
    if data is None:
        return None
    root = Table(f, data)
    keys = ("id", "title", "instructions", "scale", "items", "bands", "critical")
    root.check_keys(keys, keys[:-1])
    file_id = root.text("id")
    if file_id and file_id != ident:
        root.error("id", f"is {file_id!r} but the file is named {ident}.toml")
    title = root.per_language("title", languages)
    instructions = root.per_language("instructions", languages)

    scale: dict[int, dict[str, str]] = {}
    for entry in root.tables("scale"):
        entry.check_keys(("value", "label"), ("value", "label"))
        value = entry.integer("value", 0, 10)
        if value in scale:
            entry.error("value", f"{value} appears twice in the scale")
        scale[value] = entry.per_language("label", languages)
    scale = dict(sorted(scale.items()))
    if scale and list(scale) != list(range(len(scale))):
        root.error("scale", f"values must be 0, 1, 2, ... without gaps, not {list(scale)}")

    items: list[Item] = []
    for entry in root.tables("items"):
        entry.check_keys(languages, languages)
        items.append(Item(MappingProxyType({lang: entry.text(lang) for lang in languages})))
    if not items:
        root.error("items", "must list at least one item")
    max_score = (max(scale) if scale else 0) * len(items)

    bands: list[Band] = []
    for entry in root.tables("bands"):
        entry.check_keys(("lo", "hi", "severity", "label"), ("lo", "hi", "severity", "label"))
        lo = entry.integer("lo", 0, 1000)
        hi = entry.integer("hi", 0, 1000)
        if hi < lo:
            entry.error("hi", f"{hi} is below lo ({lo})")
        band = Band(lo, hi, entry.text("severity"), entry.per_language("label", languages))
        bands.append(band)
    bands.sort(key=lambda b: b.lo)
    expected = 0
    for band in bands:
        if band.lo > expected:
            root.error("bands", f"no band covers scores {expected}..{band.lo - 1}")
        elif band.lo < expected:
            root.error("bands", f"bands overlap at score {band.lo}")
        expected = max(expected, band.hi + 1)
    if bands and expected - 1 != max_score:
        root.error(
            "bands",
            f"must end at the maximum score {max_score} "
            f"({len(items)} items x {max(scale) if scale else 0}), not {expected - 1}",
        )

    critical: dict[int, int] = {}
    crit = root.table("critical", required=False)
    crit.check_keys(("items",))
    if "items" in crit.data:
        for entry in crit.tables("items"):
            entry.check_keys(("item", "min_answer"), ("item", "min_answer"))
            number = entry.integer("item", 1, max(len(items), 1))
            top = max(scale, default=0)
            critical[number - 1] = entry.integer("min_answer", min(1, top), top)

    return Instrument(
        id=ident,
        title=MappingProxyType(title),
        instructions=MappingProxyType(instructions),
        items=tuple(items),
        scale=MappingProxyType({v: MappingProxyType(lab) for v, lab in scale.items()}),
        bands=tuple(bands),
        critical_items=MappingProxyType(critical),
    )
