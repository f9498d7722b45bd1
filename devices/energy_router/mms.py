"""MMS (ISO 9506) services of an IEC 61850 server over a :class:`~devices.energy_router.scl_model.DataModel`.

Initiate, Conclude, and the confirmed services IEC 61850-8-1 maps GetDataValues / SetDataValues, the data-set
and directory services onto: Read (of variables or of a named variable list), Write, GetNameList,
GetVariableAccessAttributes, GetNamedVariableListAttributes, Identify. Writes below a report control block go to
the :class:`~devices.energy_router.reports.ReportEngine`, which sends InformationReports to the association that
enabled it. No I/O here: a request PDU (decoded BER) goes in, the response PDU (bytes) comes out. A request
that cannot be understood gets a RejectPDU (pdu-error or confirmed-request reason), an unknown object an access
failure: the protocol's own answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from devices.energy_router import ber
from devices.energy_router.ber import CONTEXT, UNIVERSAL, BerError, Tlv
from devices.energy_router.reports import ReportClient, ReportEngine
from devices.energy_router.scl_model import WRITABLE_FCS, DataModel, DataSet, Node, ValueMismatch

# DataAccessError (ISO 9506-2)
HARDWARE_FAULT, TEMPORARILY_UNAVAILABLE, OBJECT_ACCESS_DENIED = 1, 2, 3
TYPE_INCONSISTENT, OBJECT_ACCESS_UNSUPPORTED, OBJECT_NON_EXISTENT, OBJECT_VALUE_INVALID = 7, 9, 10, 11
DATA_ACCESS_ERRORS = {0: "object-invalidated", 1: "hardware-fault", 2: "temporarily-unavailable",
                      3: "object-access-denied", 4: "object-undefined", 5: "invalid-address", 6: "type-unsupported",
                      7: "type-inconsistent", 8: "object-attribute-inconsistent", 9: "object-access-unsupported",
                      10: "object-non-existent", 11: "object-value-invalid"}
# RejectPDU reasons: (choice tag, code)
REJECT_UNKNOWN_PDU, REJECT_INVALID_PDU = (5, 0), (5, 1)
REJECT_UNRECOGNIZED_SERVICE, REJECT_INVALID_ARGUMENT = (1, 1), (1, 4)
# GetNameList object classes
NAMED_VARIABLE, NAMED_VARIABLE_LIST, JOURNAL, DOMAIN = 0, 2, 8, 9
NAMES_PER_RESPONSE = 200
ACCESS_OBJECT_NON_EXISTENT = 2  # ServiceError class access
#: services this server supports (ServiceSupportOptions bit numbers)
SERVICES = (1, 2, 4, 5, 6, 12, 79)  # getNameList, identify, read, write, getVariableAccessAttributes,
#                                   getNamedVariableListAttributes, informationReport
MAX_PDU = 65000

#: ``on_write(domain, item, node, value) -> DataAccessError code or None``: applies an accepted write
WriteHook = Callable[[str, str, Node, Any], "int | None"]


class AccessError(Exception):
    """Answer with a Confirmed-ErrorPDU of the access class (ISO 9506 ServiceError)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Reject(Exception):
    """Answer with a RejectPDU."""

    def __init__(self, reason: tuple[int, int], invoke_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.invoke_id = reason, invoke_id


@dataclass(frozen=True)
class Identity:
    vendor: str = "s4g-hil"
    model: str = "EnergyRouter"
    revision: str = "1"


def initiate_response(request: Tlv) -> tuple[bytes, int]:
    """Initiate-ResponsePDU for an Initiate-RequestPDU, and the negotiated max PDU size."""
    if not request.is_(CONTEXT, 8):
        raise Reject(REJECT_UNKNOWN_PDU)
    try:
        calling = request.child(CONTEXT, 0)
        max_pdu = min(MAX_PDU, ber.to_int(calling)) if calling is not None else MAX_PDU
        out_calling = min(5, ber.to_int(request.need(CONTEXT, 1, "proposedMaxServOutstandingCalling")))
        out_called = min(5, ber.to_int(request.need(CONTEXT, 2, "proposedMaxServOutstandingCalled")))
        nesting = request.child(CONTEXT, 3)
        depth = min(10, ber.to_int(nesting)) if nesting is not None else 10
    except BerError:
        raise Reject(REJECT_INVALID_PDU) from None
    if max_pdu < 64 or out_calling < 1 or out_called < 1:
        raise Reject(REJECT_INVALID_PDU)
    services = 0
    for bit in SERVICES:
        services |= 1 << (84 - bit)
    detail = ber.seq(0xA4, ber.integer(0x80, 1), ber.bit_string(0x81, 0b11110001000, 11),
                     ber.bit_string(0x82, services, 85))
    return ber.seq(0xA9, ber.integer(0x80, max_pdu), ber.integer(0x81, out_calling), ber.integer(0x82, out_called),
                   ber.integer(0x83, depth), detail), max_pdu


def reject(reason: tuple[int, int], invoke_id: int | None = None) -> bytes:
    parts = [ber.integer(0x80, invoke_id, signed=False)] if invoke_id is not None else []
    return ber.seq(0xA4, *parts, ber.integer(0x80 | reason[0], reason[1]))


def _encode(t: Tlv) -> bytes:
    """Re-encode a decoded element (tags here are all below 31)."""
    return ber.tlv(t.cls | (0x20 if t.constructed else 0) | t.number, t.value)


def _object_name(t: Tlv) -> tuple[str, str]:
    """(domain, item) of an ObjectName; only domain-specific names exist in an IEC 61850 server."""
    if not t.is_(CONTEXT, 1) or len(t.children) != 2:
        raise KeyError("not a domain-specific name")
    return ber.to_str(t.children[0]), ber.to_str(t.children[1])


class MmsServer:
    """Serves one data model; one instance per IED, shared by every association."""

    def __init__(self, model: DataModel, on_write: WriteHook, identity: Identity = Identity()) -> None:
        self.model = model
        self.on_write = on_write
        self.identity = identity
        self.reports = ReportEngine(model)

    def handle(self, pdu: bytes, client: ReportClient | None = None) -> bytes | None:
        """The response to one MMS PDU (None: nothing to answer); ``client`` is the association it came on."""
        try:
            t = ber.decode(pdu)
        except BerError:
            return reject(REJECT_INVALID_PDU)
        return self.handle_tlv(t, client)

    def handle_tlv(self, t: Tlv, client: ReportClient | None = None) -> bytes | None:
        if t.is_(CONTEXT, 11):  # conclude-request
            return ber.tlv(0x8C, b"")
        if t.is_(CONTEXT, 0) and t.constructed:
            return self._confirmed(t, client)
        if t.is_(CONTEXT, 3) or t.is_(CONTEXT, 4):  # unconfirmed PDU or reject from the client: no answer
            return None
        return reject(REJECT_UNKNOWN_PDU)

    def _confirmed(self, t: Tlv, client: ReportClient | None) -> bytes:
        invoke_id = None
        try:
            if len(t.children) != 2 or not t.children[0].is_(UNIVERSAL, 2):
                raise Reject(REJECT_INVALID_PDU)
            invoke_id = ber.to_int(t.children[0], signed=False)
            if invoke_id > 0xFFFFFFFF:
                raise Reject(REJECT_INVALID_PDU)
            service = t.children[1]
            handler = {1: self._get_name_list, 2: self._identify, 4: self._read, 5: self._write,
                       6: self._get_variable_access_attributes,
                       12: self._get_named_variable_list_attributes}.get(service.number)
            if service.cls != CONTEXT or handler is None:
                raise Reject(REJECT_UNRECOGNIZED_SERVICE, invoke_id)
            body = self._write(service, client) if service.number == 5 else handler(service)
        except AccessError as exc:
            assert invoke_id is not None
            return error_pdu(invoke_id, exc.code)
        except Reject as exc:
            return reject(exc.reason, exc.invoke_id if exc.invoke_id is not None else invoke_id)
        except (BerError, KeyError, IndexError, ValueError):
            return reject(REJECT_INVALID_ARGUMENT, invoke_id)
        return ber.seq(0xA1, ber.integer(0x02, invoke_id, signed=False), body)

    # -- services ----------------------------------------------------------------------------------------
    def _identify(self, req: Tlv) -> bytes:
        i = self.identity
        return ber.seq(0xA2, ber.visible(0x80, i.vendor), ber.visible(0x81, i.model), ber.visible(0x82, i.revision))

    def _variables(self, spec: Tlv) -> list[tuple[str, str] | None]:
        """The names of a VariableAccessSpecification's listOfVariable (None: not addressable here)."""
        if not spec.is_(CONTEXT, 0):
            raise KeyError("only listOfVariable is supported")
        out: list[tuple[str, str] | None] = []
        for item in spec.children:
            var = item.child(CONTEXT, 0)  # variableSpecification: name
            if var is None or item.child(CONTEXT, 5) is not None:  # address forms and alternate access: no
                out.append(None)
                continue
            out.append(_object_name(var.only("ObjectName")))
        if not out:
            raise KeyError("empty list of variables")
        return out

    def _dataset(self, name: Tlv) -> DataSet | None:
        domain, item = _object_name(name)
        return self.model.datasets.get(domain, {}).get(item)

    def _read(self, req: Tlv) -> bytes:
        spec_tlv = req.need(CONTEXT, 1, "variableAccessSpecification")
        with_spec = req.child(CONTEXT, 0)
        spec = spec_tlv.only("variableAccessSpecification")
        if spec.is_(CONTEXT, 1):  # a named variable list: a data set (GetDataSetValues)
            ds = self._dataset(spec.only("ObjectName"))
            if ds is None:
                results = [ber.integer(0x80, OBJECT_NON_EXISTENT)]
            else:
                results = [node.data() if (node := self.model.find(*m)) is not None
                           else ber.integer(0x80, OBJECT_NON_EXISTENT) for m in ds.members]
        else:
            results = []
            for name in self._variables(spec):
                node = self.model.find(*name) if name else None
                results.append(node.data() if node is not None else
                               ber.integer(0x80, OBJECT_NON_EXISTENT if name else OBJECT_ACCESS_UNSUPPORTED))
        parts = [ber.seq(0xA0, _encode(spec))] if with_spec is not None and ber.to_bool(with_spec) else []
        return ber.seq(0xA4, *parts, ber.seq(0xA1, *results))

    def _write(self, req: Tlv, client: ReportClient | None = None) -> bytes:
        if len(req.children) != 2:
            raise KeyError("write: specification and data expected")
        spec, data = req.children
        if spec.is_(CONTEXT, 1):
            return ber.seq(0xA5, ber.integer(0x80, OBJECT_NON_EXISTENT))
        names = self._variables(spec)
        if not data.is_(CONTEXT, 0) or len(data.children) != len(names):
            raise KeyError("write: one data value per variable expected")
        results = []
        for name, value in zip(names, data.children):
            code = self._write_one(name, value, client)
            results.append(ber.tlv(0x81, b"") if code is None else ber.integer(0x80, code))
        self.reports.scan()  # an Operate may have changed a reported status
        return ber.seq(0xA5, *results)

    def _write_one(self, name: tuple[str, str] | None, value: Tlv, client: ReportClient | None) -> int | None:
        if name is None:
            return OBJECT_ACCESS_UNSUPPORTED
        node = self.model.find(*name)
        if node is None:
            return OBJECT_NON_EXISTENT
        parts = name[1].split("$")
        report_block = len(parts) == 4 and parts[1] == "RP"
        if not report_block and (len(parts) < 3 or parts[1] not in WRITABLE_FCS):
            return OBJECT_ACCESS_DENIED  # whole LNs, whole FCs, whole RCBs and other FCs are read-only
        try:
            parsed = node.parse(value)
        except ValueMismatch:
            return TYPE_INCONSISTENT
        except ValueError:
            return OBJECT_VALUE_INVALID
        if report_block:
            return self.reports.write(client, name[0], name[1], parsed)
        return self.on_write(name[0], name[1], node, parsed)

    def _get_name_list(self, req: Tlv) -> bytes:
        cls_tlv = req.need(CONTEXT, 0, "objectClass").only("objectClass")
        if not cls_tlv.is_(CONTEXT, 0):
            raise KeyError("only basic object classes")
        object_class = ber.to_int(cls_tlv)
        scope = req.need(CONTEXT, 1, "objectScope").only("objectScope")
        after = req.child(CONTEXT, 2)
        if object_class == DOMAIN and scope.is_(CONTEXT, 0):
            names = sorted(self.model.domains)
        elif scope.is_(CONTEXT, 1):
            domain = ber.to_str(scope)
            if domain not in self.model.domains:
                raise Reject(REJECT_INVALID_ARGUMENT)
            names = (self.model.names(domain) if object_class == NAMED_VARIABLE else
                     sorted(self.model.datasets.get(domain, {})) if object_class == NAMED_VARIABLE_LIST else [])
        else:
            names = []
        if after is not None:
            start = ber.to_str(after)
            names = [n for n in names if n > start]
        more = len(names) > NAMES_PER_RESPONSE
        names = names[:NAMES_PER_RESPONSE]
        return ber.seq(0xA1, ber.seq(0xA0, *(ber.visible(0x1A, n) for n in names)), ber.boolean(0x81, more))

    def _get_variable_access_attributes(self, req: Tlv) -> bytes:
        name_tlv = req.only("GetVariableAccessAttributes")
        if not name_tlv.is_(CONTEXT, 0):
            raise KeyError("only by name")
        node = self.model.find(*_object_name(name_tlv.only("ObjectName")))
        if node is None:
            raise AccessError(ACCESS_OBJECT_NON_EXISTENT)
        return ber.seq(0xA6, ber.boolean(0x80, False), ber.seq(0xA2, node.type_spec()))


    def _get_named_variable_list_attributes(self, req: Tlv) -> bytes:
        """The members of a data set (GetDataSetDirectory); data sets from the SCL are not deletable."""
        ds = self._dataset(req.only("ObjectName"))
        if ds is None:
            raise AccessError(ACCESS_OBJECT_NON_EXISTENT)
        members = (ber.seq(0x30, ber.seq(0xA0, ber.seq(0xA1, ber.visible(0x1A, d), ber.visible(0x1A, i))))
                   for d, i in ds.members)
        return ber.seq(0xAC, ber.boolean(0x80, False), ber.seq(0xA1, *members))


def error_pdu(invoke_id: int, access_code: int) -> bytes:
    """Confirmed-ErrorPDU with an access-class service error."""
    return ber.seq(0xA2, ber.integer(0x80, invoke_id, signed=False),
                   ber.seq(0xA2, ber.seq(0xA0, ber.integer(0x87, access_code))))
