"""The IEC 61850 data model of an IED read from its SCL/ICD file, laid out as MMS named variables (8-1 mapping).

A logical node ``MMXN1`` is one MMS variable in the logical device's domain (``ERLD0``) whose components are the
functional constraints present (``MX``, ``SV``...), each a structure of the data objects holding attributes of
that FC, down to the basic types: ``MMXN1$MX$Watt$instMag$f``. This module knows the tree, the MMS type of every
node (for GetVariableAccessAttributes), its value (for Read) and whether and how it may be written; it does no I/O.
"""

from __future__ import annotations

import math
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

from devices.energy_router import ber

NS = {"scl": "http://www.iec.ch/61850/2003/SCL"}
#: FCs in the order they appear as components of a logical node
FC_ORDER = ("ST", "MX", "CO", "SP", "SV", "CF", "DC", "SG", "SE", "EX", "BR", "RP", "LG", "GO", "MS", "US")
#: FCs a client may write with SetDataValues (CO is the Operate of a control, handled by the device)
WRITABLE_FCS = frozenset({"SP", "SV", "CO"})

# basic type -> (MMS kind, size): kind one of bool, int, uint, float, bits, utc, vis, octet, mms
BASIC = {
    "BOOLEAN": ("bool", 0), "INT8": ("int", 8), "INT16": ("int", 16), "INT32": ("int", 32), "INT64": ("int", 64),
    "INT8U": ("uint", 8), "INT16U": ("uint", 16), "INT32U": ("uint", 32), "Enum": ("int", 8),
    "FLOAT32": ("float", 32), "FLOAT64": ("float", 64), "Quality": ("bits", 13), "Check": ("bits", 2),
    "Dbpos": ("bits", 2), "Tcmd": ("bits", 2), "Timestamp": ("utc", 0), "EntryTime": ("utc", 0),
    "VisString32": ("vis", 32), "VisString64": ("vis", 64), "VisString65": ("vis", 65),
    "VisString129": ("vis", 129), "VisString255": ("vis", 255), "Octet64": ("octet", 64),
    "Unicode255": ("mms", 255),
}
INT_RANGE = {("int", b): (-(1 << (b - 1)), (1 << (b - 1)) - 1) for b in (8, 16, 32, 64)} | \
            {("uint", b): (0, (1 << b) - 1) for b in (8, 16, 32)}


class SclError(ValueError):
    """The SCL file is not a model this server can serve (names the element)."""


class ValueMismatch(ValueError):
    """A written value does not have the attribute's MMS type (type-inconsistent)."""


@dataclass
class Node:
    """One node of the MMS tree: a structure (``children``) or a basic attribute (``kind``/``size``/``value``)."""

    name: str
    kind: str = "struct"
    size: int = 0
    value: Any = None
    fc: str = ""
    children: dict[str, Node] = field(default_factory=dict)
    dchg: bool = False  # a change of this value is a data-change trigger for reports (SCL ``dchg``)

    @property
    def is_leaf(self) -> bool:
        return self.kind != "struct"

    def walk(self, prefix: str) -> Iterator[tuple[str, Node]]:
        yield prefix, self
        for name, child in self.children.items():
            yield from child.walk(f"{prefix}${name}")

    # -- MMS encodings ---------------------------------------------------------------------------------
    def type_spec(self) -> bytes:
        """ISO 9506 TypeSpecification of this node."""
        if not self.is_leaf:
            comps = b"".join(ber.seq(0x30, ber.visible(0x80, n), ber.seq(0xA1, c.type_spec()))
                             for n, c in self.children.items())
            return ber.seq(0xA2, ber.seq(0xA1, comps))
        k, s = self.kind, self.size
        if k == "bool":
            return ber.tlv(0x83, b"")
        if k == "int":
            return ber.tlv(0x85, bytes([s]))
        if k == "uint":
            return ber.tlv(0x86, bytes([s]))
        if k == "float":
            return ber.seq(0xA7, ber.integer(0x02, s), ber.integer(0x02, 8 if s == 32 else 11))
        if k == "bits":
            return ber.integer(0x84, s)
        if k == "utc":
            return ber.tlv(0x91, b"")
        if k == "vis":
            return ber.integer(0x8A, -s)  # negative: varying length up to s
        if k == "octet":
            return ber.integer(0x89, -s)
        return ber.integer(0x90, -s)  # mms string

    def data(self) -> bytes:
        """ISO 9506 Data of this node's current value(s)."""
        if not self.is_leaf:
            return ber.seq(0xA2, *(c.data() for c in self.children.values()))
        k, v = self.kind, self.value
        if k == "bool":
            return ber.boolean(0x83, bool(v))
        if k == "int":
            return ber.integer(0x85, int(v))
        if k == "uint":
            return ber.integer(0x86, int(v), signed=False)
        if k == "float":
            if self.size == 32:
                return ber.float32(0x87, float(v))
            return ber.tlv(0x87, b"\x0b" + struct.pack(">d", float(v)))
        if k == "bits":
            return ber.bit_string(0x84, int(v), self.size)
        if k == "utc":
            return ber.tlv(0x91, utc_bytes(float(v)))
        if k == "vis":
            return ber.visible(0x8A, str(v))
        if k == "octet":
            return ber.tlv(0x89, bytes(v))
        return ber.tlv(0x90, str(v).encode("utf-8"))

    def parse(self, tlv: ber.Tlv) -> Any:
        """The Python value of a written Data element for this node (a dict for a structure);
        ValueMismatch if its type differs, ValueError if its value does not fit."""
        if not self.is_leaf:
            if not tlv.is_(ber.CONTEXT, 2) or len(tlv.children) != len(self.children):
                raise ValueMismatch(f"{self.name}: structure of {len(self.children)} components expected")
            return {name: child.parse(t) for (name, child), t in zip(self.children.items(), tlv.children)}
        k = self.kind
        tags = {"bool": 3, "int": 5, "uint": 6, "float": 7, "bits": 4, "utc": 17, "vis": 10, "octet": 9, "mms": 16}
        if not tlv.is_(ber.CONTEXT, tags[k]) or tlv.constructed:
            raise ValueMismatch(f"{self.name}: {k} expected")
        try:
            if k == "bool":
                return ber.to_bool(tlv)
            if k in ("int", "uint"):
                n = ber.to_int(tlv, signed=(k == "int"))
                lo, hi = INT_RANGE[(k, self.size)]
                if not lo <= n <= hi:
                    raise ValueError(f"{self.name}: {n} does not fit {k}{self.size}")
                return n
            if k == "float":
                return ber.to_float(tlv)
            if k == "bits":
                if not tlv.value or tlv.value[0] > 7:
                    raise ValueMismatch(f"{self.name}: bad bit string")
                return int.from_bytes(tlv.value[1:], "big") >> tlv.value[0] if len(tlv.value) > 1 else 0
            if k == "utc":
                if len(tlv.value) != 8:
                    raise ValueMismatch(f"{self.name}: UtcTime has 8 octets")
                return struct.unpack(">I", tlv.value[:4])[0] + int.from_bytes(tlv.value[4:7], "big") / 2**24
            if k == "vis":
                text = ber.to_str(tlv)
                if len(text) > self.size:
                    raise ValueError(f"{self.name}: longer than {self.size}")
                return text
            if k == "octet":
                if len(tlv.value) > self.size:
                    raise ValueError(f"{self.name}: longer than {self.size}")
                return tlv.value
            return tlv.value.decode("utf-8", errors="replace")
        except ber.BerError as exc:
            raise ValueMismatch(str(exc)) from None


def utc_bytes(t_s: float) -> bytes:
    """UtcTime: 4 octets seconds, 3 octets fraction, 1 octet time quality (24 bits of accuracy: 0x18)."""
    if not math.isfinite(t_s) or t_s < 0:
        t_s = 0.0
    secs = int(t_s)
    frac = min(int((t_s - secs) * 2**24), 2**24 - 1)
    return struct.pack(">I", secs & 0xFFFFFFFF) + frac.to_bytes(3, "big") + b"\x18"


def _default(kind: str) -> Any:
    return {"bool": False, "int": 0, "uint": 0, "float": 0.0, "bits": 0, "utc": 0.0, "vis": "", "octet": b"",
            "mms": ""}[kind]


@dataclass
class DataSet:
    """A named variable list of the SCL (``LLN0$Measurements`` in its domain): members as (domain, item)."""

    domain: str
    name: str  # MMS item name: LN$dsName
    members: list[tuple[str, str]]

    @property
    def reference(self) -> str:
        """The DatSet value a report control block holds: ``ERLD0/LLN0$Measurements``."""
        return f"{self.domain}/{self.name}"


#: IEC 61850-8-1 unbuffered report control block components, in their MMS order: (name, kind, size)
URCB_COMPONENTS = (("RptID", "vis", 129), ("RptEna", "bool", 0), ("Resv", "bool", 0), ("DatSet", "vis", 129),
                   ("ConfRev", "uint", 32), ("OptFlds", "bits", 10), ("BufTm", "uint", 32), ("SqNum", "uint", 8),
                   ("TrgOps", "bits", 6), ("IntgPd", "uint", 32), ("GI", "bool", 0), ("Owner", "octet", 64))
#: OptFlds bit numbers (bit 0 reserved) and the SCL OptFields attributes that set them
OPT_FIELDS = {"seqNum": 1, "timeStamp": 2, "reasonCode": 3, "dataSet": 4, "dataRef": 5, "bufOvfl": 6,
              "entryID": 7, "configRef": 8, "segmentation": 9}
#: TrgOps bit numbers (bit 0 reserved) and the SCL TrgOps attributes that set them
TRG_OPS = {"dchg": 1, "qchg": 2, "dupd": 3, "period": 4, "gi": 5}


def bits_of(numbers: list[int], nbits: int) -> int:
    """The integer value of a BIT STRING of ``nbits`` with the given bit numbers set (bit 0 first)."""
    return sum(1 << (nbits - 1 - k) for k in numbers)


def urcb_node(name: str, rpt_id: str, dataset: str, conf_rev: int, opt_flds: int, buf_tm: int, trg_ops: int,
              intg_pd: int) -> Node:
    values = {"RptID": rpt_id, "DatSet": dataset, "ConfRev": conf_rev, "OptFlds": opt_flds, "BufTm": buf_tm,
              "TrgOps": trg_ops, "IntgPd": intg_pd}
    node = Node(name, fc="RP")
    for comp, kind, size in URCB_COMPONENTS:
        node.children[comp] = Node(comp, kind, size, values.get(comp, _default(kind)), "RP")
    return node


class DataModel:
    """The served tree of one IED: domains (logical devices) holding logical-node variables, the data sets
    (named variable lists) by domain, and the references of the unbuffered report control blocks."""

    def __init__(self, ied_name: str, domains: dict[str, dict[str, Node]],
                 datasets: dict[str, dict[str, DataSet]] | None = None, urcbs: list[tuple[str, str]] | None = None
                 ) -> None:
        self.ied_name = ied_name
        self.domains = domains
        self.datasets = datasets or {}
        self.urcbs = urcbs or []  # (domain, item) of every URCB: ("ERLD0", "LLN0$RP$urcbMeas01")

    def rename_domain(self, old: str, new: str) -> None:
        """Serve logical device ``old`` as ``new`` (the configured IED/LD name), data set references included."""
        self.domains[new] = self.domains.pop(old)
        sets = self.datasets.pop(old, {})
        for ds in sets.values():
            ds.domain = new
            ds.members = [(new if d == old else d, i) for d, i in ds.members]
        self.datasets[new] = sets
        self.urcbs = [(new if d == old else d, i) for d, i in self.urcbs]
        for domain, item in self.urcbs:
            node = self.find(domain, item + "$DatSet")
            if node is not None and str(node.value).startswith(old + "/"):
                node.value = new + str(node.value)[len(old):]

    def dataset(self, reference: str) -> DataSet | None:
        """A data set by its reference (``ERLD0/LLN0$Measurements``; the dotted form ``ERLD0/LLN0.Measurements``
        is accepted too)."""
        domain, _, name = reference.partition("/")
        return self.datasets.get(domain, {}).get(name.replace(".", "$"))

    @classmethod
    def from_scl(cls, path: str | Path, ied_name: str | None = None) -> DataModel:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as exc:
            raise SclError(f"{path}: {exc}") from exc
        return _Builder(root, str(path)).build(ied_name)

    # -- lookup ---------------------------------------------------------------------------------------
    def find(self, domain: str, item: str) -> Node | None:
        lns = self.domains.get(domain)
        if lns is None:
            return None
        parts = item.split("$")
        node = lns.get(parts[0])
        for part in parts[1:]:
            if node is None:
                return None
            node = node.children.get(part)
        return node

    def names(self, domain: str) -> list[str]:
        """Every named variable of a domain at every level, sorted (what GetNameList returns)."""
        out: list[str] = []
        for ln_name, ln in self.domains.get(domain, {}).items():
            out += [name for name, _ in ln.walk(ln_name)]
        return sorted(out)

    def leaf(self, ref: str) -> Node:
        """A basic attribute by its IEC reference without the IED name: ``LD0/MMXN1.Watt.instMag.f[MX]``."""
        ld, _, rest = ref.partition("/")
        obj, _, fc = rest.partition("[")
        ln, *path = obj.split(".")
        node = self.find(self.ied_name + ld, "$".join([ln, fc.rstrip("]"), *path]))
        if node is None or not node.is_leaf:
            raise KeyError(f"no basic attribute {ref!r} in the data model")
        return node

    def set(self, ref: str, value: Any) -> None:
        self.leaf(ref).value = value


def _ln_name(ln: ET.Element) -> str:
    return (ln.get("prefix") or "") + (ln.get("lnClass") or "") + (ln.get("inst") or "")


class _Builder:
    def __init__(self, root: ET.Element, where: str) -> None:
        self.root, self.where = root, where
        tpl = root.find("scl:DataTypeTemplates", NS)
        if tpl is None:
            raise SclError(f"{where}: no DataTypeTemplates")
        self.ln_types = {e.get("id"): e for e in tpl.findall("scl:LNodeType", NS)}
        self.do_types = {e.get("id"): e for e in tpl.findall("scl:DOType", NS)}
        self.da_types = {e.get("id"): e for e in tpl.findall("scl:DAType", NS)}

    def build(self, ied_name: str | None) -> DataModel:
        ieds = self.root.findall("scl:IED", NS)
        ied = next((i for i in ieds if ied_name in (None, i.get("name"))), None)
        if ied is None:
            raise SclError(f"{self.where}: no IED named {ied_name!r}")
        name = ied.get("name") or ""
        model = DataModel(name, {})
        lds = list(ied.iter(f"{{{NS['scl']}}}LDevice"))
        for ld in lds:
            lns: dict[str, Node] = {}
            for ln in [*ld.findall("scl:LN0", NS), *ld.findall("scl:LN", NS)]:
                lns[_ln_name(ln)] = self._ln(_ln_name(ln), ln.get("lnType") or "")
            model.domains[name + (ld.get("inst") or "")] = lns
        for ld in lds:  # data sets may name any LD of the IED, so every LD is built first
            domain = name + (ld.get("inst") or "")
            for ln in [*ld.findall("scl:LN0", NS), *ld.findall("scl:LN", NS)]:
                self._datasets(model, domain, ln)
                self._report_controls(model, domain, ln)
        return model

    def _datasets(self, model: DataModel, domain: str, ln: ET.Element) -> None:
        for ds in ln.findall("scl:DataSet", NS):
            members = []
            for fcda in ds.findall("scl:FCDA", NS):
                member_domain = model.ied_name + (fcda.get("ldInst") or "")
                path = [(fcda.get("prefix") or "") + (fcda.get("lnClass") or "") + (fcda.get("lnInst") or ""),
                        fcda.get("fc") or "", *(fcda.get("doName") or "").split("."),
                        *((fcda.get("daName") or "").split(".") if fcda.get("daName") else [])]
                item = "$".join(path)
                if model.find(member_domain, item) is None:
                    raise SclError(f"{self.where}: data set {ds.get('name')!r}: no {member_domain}/{item}")
                members.append((member_domain, item))
            if not members:
                raise SclError(f"{self.where}: data set {ds.get('name')!r} has no FCDA")
            name = f"{_ln_name(ln)}${ds.get('name')}"
            model.datasets.setdefault(domain, {})[name] = DataSet(domain, name, members)

    def _report_controls(self, model: DataModel, domain: str, ln: ET.Element) -> None:
        ln_node = model.domains[domain][_ln_name(ln)]
        for rc in ln.findall("scl:ReportControl", NS):
            rc_name = rc.get("name") or ""
            if (rc.get("buffered") or "false").lower() == "true":
                raise SclError(f"{self.where}: report control {rc_name!r}: buffered reports are not supported")
            dataset = f"{domain}/{_ln_name(ln)}${rc.get('datSet')}" if rc.get("datSet") else ""
            if dataset and model.dataset(dataset) is None:
                raise SclError(f"{self.where}: report control {rc_name!r}: no data set {rc.get('datSet')!r}")
            trg, opt = rc.find("scl:TrgOps", NS), rc.find("scl:OptFields", NS)
            trg_ops = bits_of([b for a, b in TRG_OPS.items() if trg is not None and trg.get(a) == "true"], 6)
            opt_flds = bits_of([b for a, b in OPT_FIELDS.items() if opt is not None and opt.get(a) == "true"], 10)
            enabled = rc.find("scl:RptEnabled", NS)
            count = int(enabled.get("max") or 1) if enabled is not None else 1
            indexed = (rc.get("indexed") or "true").lower() == "true"
            names = [f"{rc_name}{k:02d}" for k in range(1, count + 1)] if indexed else [rc_name]
            rp = ln_node.children.setdefault("RP", Node("RP"))
            for rcb in names:
                rp.children[rcb] = urcb_node(rcb, rc.get("rptID") or "", dataset, int(rc.get("confRev") or 1),
                                             opt_flds, int(rc.get("bufTime") or 0), trg_ops,
                                             int(rc.get("intgPd") or 0))
                model.urcbs.append((domain, f"{_ln_name(ln)}$RP${rcb}"))
            ln_node.children = {fc: ln_node.children[fc] for fc in FC_ORDER if fc in ln_node.children}

    def _ln(self, name: str, type_id: str) -> Node:
        ln_type = self._get(self.ln_types, type_id, "LNodeType")
        node = Node(name)
        for fc in FC_ORDER:
            fc_node = Node(fc)
            for do in ln_type.findall("scl:DO", NS):
                do_node = self._do(do.get("name") or "", do.get("type") or "", fc)
                if do_node is not None:
                    fc_node.children[do_node.name] = do_node
            if fc_node.children:
                node.children[fc] = fc_node
        return node

    def _do(self, name: str, type_id: str, fc: str, depth: int = 0) -> Node | None:
        if depth > 8:
            raise SclError(f"{self.where}: DOType {type_id} nests too deep")
        do_type = self._get(self.do_types, type_id, "DOType")
        node = Node(name)
        for el in do_type:
            tag = el.tag.split("}")[-1]
            if tag == "DA" and el.get("fc") == fc:
                node.children[el.get("name") or ""] = self._da(el, fc, dchg=el.get("dchg") == "true")
            elif tag == "SDO":
                sub = self._do(el.get("name") or "", el.get("type") or "", fc, depth + 1)
                if sub is not None:
                    node.children[sub.name] = sub
        return node if node.children else None

    def _da(self, el: ET.Element, fc: str, depth: int = 0, dchg: bool = False) -> Node:
        if depth > 8:
            raise SclError(f"{self.where}: DAType nests too deep")
        name, btype = el.get("name") or "", el.get("bType") or ""
        if btype == "Struct":
            da_type = self._get(self.da_types, el.get("type") or "", "DAType")
            node = Node(name, fc=fc, dchg=dchg)
            for bda in da_type.findall("scl:BDA", NS):
                node.children[bda.get("name") or ""] = self._da(bda, fc, depth + 1, dchg)
            return node
        if btype not in BASIC:
            raise SclError(f"{self.where}: basic type {btype!r} of {name!r} not supported")
        kind, size = BASIC[btype]
        value: Any = _default(kind)
        val = el.find("scl:Val", NS)
        if val is not None and val.text is not None:
            parsers: dict[str, Callable[[str], Any]] = {"bool": lambda s: s.strip().lower() == "true", "int": int,
                                                        "uint": int, "float": float}
            value = parsers.get(kind, str)(val.text.strip())
        return Node(name, kind, size, value, fc, dchg=dchg)

    def _get(self, table: dict[str | None, ET.Element], type_id: str, what: str) -> ET.Element:
        try:
            return table[type_id]
        except KeyError:
            raise SclError(f"{self.where}: {what} {type_id!r} is not defined") from None
