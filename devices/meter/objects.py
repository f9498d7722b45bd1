"""The meter's COSEM objects (Blue Book interface classes) over one member of a :class:`MeterBank`.

Data (class 1), Register (class 3), Clock (class 8), Profile Generic (class 7, with range- and
entry-descriptor selective access on its buffer) and Association LN (class 15, its object list). Values are
read from the bank when asked, so they are always those of the last model step. A GET that cannot be served
gets the Blue Book's data-access-result, never an exception.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from collections.abc import Callable
from typing import cast

import numpy as np

from devices.meter import axdr
from devices.meter.apdu import AttributeRef, DataAccessResult, Result, Selection
from devices.meter.axdr import Data, DecodeError, Tag
from devices.meter.model import PROFILE_KEYS, REGISTERS, U16, MeterBank, MeterConfig, Reg

DAR = DataAccessResult
CLASS_DATA, CLASS_REGISTER, CLASS_PROFILE, CLASS_CLOCK, CLASS_ASSOCIATION_LN = 1, 3, 7, 8, 15
CLOCK_LN = axdr.obis_bytes("0.0.1.0.0.255")
PROFILE_LN = axdr.obis_bytes("1.0.99.1.0.255")
SERIAL_LN = axdr.obis_bytes("0.0.96.1.0.255")
DEVICE_NAME_LN = axdr.obis_bytes("0.0.42.0.0.255")
ASSOCIATION_LN = axdr.obis_bytes("0.0.40.0.0.255")
SELECTOR_RANGE, SELECTOR_ENTRY = 1, 2
_UNSPECIFIED_DATETIME = bytes([0xFF] * 9) + b"\x80\x00" + b"\xff"


class AccessError(Exception):
    """A GET that gets a data-access-result instead of data."""

    def __init__(self, result: DAR) -> None:
        super().__init__(result.name)
        self.result = result


@dataclass
class CosemObject:
    class_id: int
    version: int
    ln: bytes
    attributes: dict[int, Callable[[], Data]]
    selective: dict[int, Callable[[Selection], Data]]

    def get(self, attribute: int, selection: Selection | None) -> Data:
        if attribute == 1:
            return axdr.octets(self.ln)
        if selection is not None:
            handler = self.selective.get(attribute)
            if handler is None:
                raise AccessError(DAR.OTHER_REASON)  # this attribute has no selective access
            return handler(selection)
        getter = self.attributes.get(attribute)
        if getter is None:
            raise AccessError(DAR.OBJECT_UNDEFINED)
        return getter()


def capture_object(class_id: int, ln: bytes, attribute: int) -> Data:
    return axdr.structure(axdr.u16(class_id), axdr.octets(ln), axdr.i8(attribute), axdr.u16(0))


class MeterObjects:
    """Every object of meter ``index`` of ``bank``, by logical name."""

    def __init__(self, bank: MeterBank, index: int, config: MeterConfig, serial: str) -> None:
        self.bank, self.i, self.cfg, self.serial = bank, index, config, serial
        self.objects: dict[bytes, CosemObject] = {}
        self._add(CLASS_ASSOCIATION_LN, 1, ASSOCIATION_LN, {2: self._object_list})
        self._add(CLASS_DATA, 0, DEVICE_NAME_LN, {2: lambda: axdr.octets(self.device_name().encode())})
        self._add(CLASS_DATA, 0, SERIAL_LN, {2: lambda: axdr.octets(serial.encode())})
        self._add(CLASS_CLOCK, 0, CLOCK_LN, {
            2: lambda: axdr.octets(self.clock_octets(self.bank.clock_s(self.i))),
            3: lambda: axdr.i16(-config.utc_offset_min),  # deviation: minutes of local time to UTC
            4: lambda: axdr.u8(0),
            5: lambda: axdr.octets(_UNSPECIFIED_DATETIME),
            6: lambda: axdr.octets(_UNSPECIFIED_DATETIME),
            7: lambda: axdr.i8(0),
            8: lambda: axdr.boolean(False),
            9: lambda: axdr.enum(1),  # internal crystal
        })
        for reg in REGISTERS:
            if config.served(reg):
                self._add(CLASS_REGISTER, 0, axdr.obis_bytes(reg.obis),
                          # mypy cannot type a lambda with a default argument
                          {2: lambda r=reg: self.register_value(r),  # type: ignore[misc]
                           3: lambda r=reg: axdr.structure(axdr.i8(config.scaler(r)), axdr.enum(r.unit))})  # type: ignore[misc]
        self.captures = [(CLASS_CLOCK, CLOCK_LN, 2)] + [
            (CLASS_REGISTER, axdr.obis_bytes(next(r.obis for r in REGISTERS if r.key == key)), 2)
            for key in PROFILE_KEYS]
        self._add(CLASS_PROFILE, 1, PROFILE_LN, {
            2: lambda: self._buffer(None, None, None),
            3: lambda: axdr.array(capture_object(*c) for c in self.captures),
            4: lambda: axdr.u32(config.profile_period_s),
            5: lambda: axdr.enum(1),  # fifo
            6: lambda: capture_object(0, bytes(6), 0),
            7: lambda: axdr.u32(int(self.bank.profile_count[self.i])),
            8: lambda: axdr.u32(config.profile_entries),
        }, selective={2: self._buffer_selected})

    def _add(self, class_id: int, version: int, ln: bytes, attributes: dict[int, Callable[[], Data]],
             selective: dict[int, Callable[[Selection], Data]] | None = None) -> None:
        self.objects[ln] = CosemObject(class_id, version, ln, attributes, selective or {})

    # -- GET ---------------------------------------------------------------------------------------------
    def get(self, ref: AttributeRef, selection: Selection | None = None) -> Result:
        obj = self.objects.get(ref.ln)
        if obj is None:
            return int(DAR.OBJECT_UNDEFINED)
        if obj.class_id != ref.class_id:
            return int(DAR.OBJECT_CLASS_INCONSISTENT)
        try:
            return obj.get(ref.attribute, selection)
        except AccessError as exc:
            return int(exc.result)

    # -- values ------------------------------------------------------------------------------------------
    def device_name(self) -> str:
        return (self.cfg.manufacturer + self.cfg.model_name + self.serial)[:16]

    def clock_octets(self, unix_s: int) -> bytes:
        t = dt.datetime.fromtimestamp(unix_s, dt.UTC)
        return axdr.datetime_octets(t, self.cfg.utc_offset_min)

    def register_value(self, reg: Reg) -> Data:
        raw = int(self.bank.reg[reg.key][self.i])
        return axdr.u16(raw) if reg.axdr == U16 else axdr.u32(raw)

    def _object_list(self) -> Data:
        def rights(obj: CosemObject) -> Data:
            attrs = [1, *sorted(obj.attributes)]
            return axdr.structure(
                axdr.array(axdr.structure(axdr.i8(a), axdr.enum(1),  # read-only
                                          axdr.array([axdr.i8(SELECTOR_RANGE), axdr.i8(SELECTOR_ENTRY)])
                                          if a in obj.selective else axdr.null()) for a in attrs),
                axdr.array([]))
        return axdr.array(axdr.structure(axdr.u16(o.class_id), axdr.u8(o.version), axdr.octets(o.ln), rights(o))
                          for o in self.objects.values())

    # -- the load profile ----------------------------------------------------------------------------------
    def _buffer(self, rows: np.ndarray | None, first_col: int | None, last_col: int | None) -> Data:
        times, values = self.bank.profile(self.i)
        if rows is not None:
            times, values = times[rows], values[rows]
        cols = list(range(len(self.captures)))[first_col:last_col]
        entries = []
        for t, row in zip(times.tolist(), values.tolist()):
            cells = [axdr.octets(self.clock_octets(t)), *(axdr.u32(v) for v in row)]
            entries.append(axdr.structure(*(cells[c] for c in cols)))
        return axdr.array(entries)

    def _buffer_selected(self, selection: Selection) -> Data:
        try:
            if selection.selector == SELECTOR_RANGE:
                return self._by_range(selection.parameters)
            if selection.selector == SELECTOR_ENTRY:
                return self._by_entry(selection.parameters)
        except (TypeError, ValueError, IndexError, DecodeError):
            raise AccessError(DAR.TYPE_UNMATCHED) from None
        raise AccessError(DAR.OTHER_REASON)  # no such selector

    def _capture_index(self, definition: Data) -> int:
        class_id, ln, attribute, _ = _fields(definition, 4)
        key = (_int(class_id), _octets(ln), _int(attribute))
        for k, c in enumerate(self.captures):
            if c == key:
                return k
        raise AccessError(DAR.OBJECT_UNAVAILABLE)

    def _by_range(self, params: Data) -> Data:
        restricting, lo, hi, selected = _fields(params, 4)
        col = self._capture_index(restricting)
        times, values = self.bank.profile(self.i)
        if col == 0:
            column = times
            bounds = [int(axdr.parse_datetime(_datetime(x), self.cfg.utc_offset_min).timestamp()) for x in (lo, hi)]
        else:
            column = values[:, col - 1]
            bounds = [_int(lo), _int(hi)]
        rows = np.flatnonzero((column >= bounds[0]) & (column <= bounds[1]))
        if selected.tag != Tag.ARRAY:
            raise TypeError("selected_values must be an array")
        if not selected.value:
            return self._buffer(rows, None, None)
        cols = [self._capture_index(d) for d in selected.value]
        full = self._buffer(rows, None, None)
        return axdr.array(axdr.structure(*(entry.value[c] for c in cols)) for entry in full.value)

    def _by_entry(self, params: Data) -> Data:
        from_entry, to_entry, from_value, to_value = (_int(x) for x in _fields(params, 4))
        count = int(self.bank.profile_count[self.i])
        last = count if to_entry == 0 else min(to_entry, count)
        ncols = len(self.captures)
        last_col = ncols if to_value == 0 else to_value
        if from_entry < 1 or from_value < 1 or from_value > last_col or last_col > ncols:
            raise ValueError("entry descriptor out of range")
        rows = np.arange(from_entry - 1, last) if from_entry <= last else np.arange(0)
        return self._buffer(rows, from_value - 1, last_col)


def _fields(d: Data, n: int) -> tuple[Data, ...]:
    if d.tag != Tag.STRUCTURE or len(d.value) != n:
        raise TypeError(f"expected a structure of {n}")
    return cast("tuple[Data, ...]", d.value)


def _int(d: Data) -> int:
    if d.tag in (Tag.BOOLEAN, Tag.FLOAT32, Tag.FLOAT64) or not isinstance(d.value, int):
        raise TypeError("expected an integer")
    return int(d.value)


def _octets(d: Data) -> bytes:
    if d.tag != Tag.OCTET_STRING or len(d.value) != 6:
        raise TypeError("expected a logical name")
    return cast(bytes, d.value)


def _datetime(d: Data) -> bytes:
    if d.tag not in (Tag.OCTET_STRING, Tag.DATE_TIME):
        raise TypeError("expected a date-time")
    return cast(bytes, d.value)
