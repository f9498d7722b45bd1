"""The socketcand-speaking CAN bus: line parser (fuzzed), and the server with python-can's own client."""

import asyncio
import socket
import time

import can
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.base import ProtocolError
from devices.libal.socketcand_server import (MAX_ELEMENT, CanFrame, SocketcandParseError, SocketcandServer,
                                             format_frame, format_send, parse_command, split_elements)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def test_parses_the_commands_python_can_and_the_daemon_send():
    assert parse_command("< open can0 >").bus == "can0"
    assert parse_command("< rawmode >").name == "rawmode"
    send = parse_command("< send 305 8 0 0 0 0 0 0 ff 1 >")  # python-can writes bytes as {x:x}
    assert send.frame == CanFrame(0x305, bytes([0, 0, 0, 0, 0, 0, 0xFF, 1]))
    ext = parse_command("< send 1AAAAAAA 2 1 F1 >")
    assert ext.frame == CanFrame(0x1AAAAAAA, b"\x01\xf1", True)
    frame = parse_command("< frame 123 23.424242 11223344 >")  # what the daemon prints
    assert frame.frame.data == b"\x11\x22\x33\x44" and frame.frame.timestamp == pytest.approx(23.424242)
    assert parse_command("< frame 123 23.424242 11 22 33 44 >").frame.data == b"\x11\x22\x33\x44"  # protocol doc
    assert parse_command("< frame 123 1.000000  >").frame.data == b""
    for bad in ("< send 800 0 >", "< send 123 9 >", "< send 123 2 1 >", "< send 123 1 100 >", "< frame 12 x 00 >",
                "< frame 123 1.0 123 >", "< open >", "< launch >", "<>", "< frame 123 1.5 " + "00" * 9 + " >"):
        with pytest.raises(SocketcandParseError):
            parse_command(bad)


def test_formats_frames_like_the_daemon_so_python_can_parses_them():
    from can.interfaces.socketcand.socketcand import (convert_ascii_message_to_can_message,
                                                      convert_can_message_to_ascii_message)

    line = format_frame(CanFrame(0x356, bytes([0xF0, 0xCD, 0x85, 0xFF])), timestamp=12.5)
    assert line == "< frame 356 12.500000 F0CD85FF >"
    msg = convert_ascii_message_to_can_message(line)
    assert (msg.arbitration_id, bytes(msg.data), msg.is_extended_id) == (0x356, bytes([0xF0, 0xCD, 0x85, 0xFF]), False)
    ext = convert_ascii_message_to_can_message(format_frame(CanFrame(0x18FF50E5, b"", True), timestamp=1.0))
    assert ext.is_extended_id and ext.arbitration_id == 0x18FF50E5 and ext.dlc == 0
    sent = convert_can_message_to_ascii_message(can.Message(arbitration_id=0x3C8, data=[1, 0xAB], is_extended_id=False))
    assert parse_command(sent).frame == CanFrame(0x3C8, b"\x01\xab")
    assert parse_command(format_send(CanFrame(0x3C8, b"\x01\xab"))).frame == CanFrame(0x3C8, b"\x01\xab")


@given(st.text(max_size=300))
@settings(max_examples=600, deadline=None)
def test_any_text_gives_elements_or_a_typed_error(text):
    try:
        elements, rest = split_elements(text)
    except SocketcandParseError as exc:
        assert isinstance(exc, ProtocolError)
        return
    assert len(rest) <= MAX_ELEMENT
    for element in elements:
        try:
            parse_command(element)
        except SocketcandParseError:
            pass


elements = st.one_of(
    st.sampled_from(["< hi >", "< ok >", "< open can0 >", "< rawmode >", "< echo >", "< send 351 2 1 2 >",
                     "< frame 351 1.000001 0102 >", "< error could not open bus >"]),
    st.builds(lambda i, d: format_send(CanFrame(i, d)), st.integers(0, 0x7FF), st.binary(max_size=8)),
    st.builds(lambda i, d: format_frame(CanFrame(i, d), 5.0), st.integers(0, 0x7FF), st.binary(max_size=8)),
)


@given(st.lists(elements, max_size=8), st.data())
@settings(max_examples=300, deadline=None)
def test_valid_streams_split_anywhere_parse_the_same(items, data):
    stream = "".join(items)
    cut = data.draw(st.integers(0, len(stream)))
    first, rest = split_elements(stream[:cut])
    second, tail = split_elements(rest + stream[cut:])
    assert tail == "" and first + second == items
    for item in items:
        parse_command(item)
    truncated = stream[:data.draw(st.integers(0, len(stream)))]
    got, rest = split_elements(truncated)  # a truncated stream waits for the rest, it never fails
    assert got == items[:len(got)]
    assert rest == "" or items[len(got)].startswith(rest)


def test_split_refuses_oversized_and_nested_elements():
    with pytest.raises(SocketcandParseError):
        split_elements("< send " + "1 " * 200)
    with pytest.raises(SocketcandParseError):
        split_elements("< send 123 < ok >")


def test_python_can_clients_share_the_bus_with_an_in_process_node():
    async def body():
        server = SocketcandServer("can0", hold_off_s=0.02)
        port = await server.start()
        heard: list[CanFrame] = []
        server.add_listener(heard.append)

        def clients():
            a = can.Bus(interface="socketcand", host="127.0.0.1", port=port, channel="can0")
            b = can.Bus(interface="socketcand", host="127.0.0.1", port=port, channel="can0")
            try:
                a.send(can.Message(arbitration_id=0x3C8, data=[1, 2], is_extended_id=False))
                got_b = b.recv(2.0)
                got_a = a.recv(0.2)  # a sender does not receive its own frame
                return got_b, got_a
            finally:
                a.shutdown()
                b.shutdown()

        got_b, got_a = await asyncio.to_thread(clients)
        assert got_b.arbitration_id == 0x3C8 and bytes(got_b.data) == b"\x01\x02"
        assert got_a is None
        assert heard == [CanFrame(0x3C8, b"\x01\x02")]

        def listen():
            bus = can.Bus(interface="socketcand", host="127.0.0.1", port=port, channel="can0")
            try:
                return bus.recv(2.0)
            finally:
                bus.shutdown()

        task = asyncio.create_task(asyncio.to_thread(listen))
        while server.open_connections() == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the client is in RAW mode and its hold-off has passed
        server.publish(CanFrame(0x351, bytes(range(8))))
        msg = await task
        assert msg.arbitration_id == 0x351 and bytes(msg.data) == bytes(range(8))
        await server.stop()
        assert server.open_connections() == 0
    run(body())


def _raw_client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    assert s.recv(64) == b"< hi >"
    return s


def _expect(s: socket.socket, text: bytes) -> None:
    got = b""
    deadline = time.monotonic() + 2
    while len(got) < len(text) and time.monotonic() < deadline:
        got += s.recv(256)
    assert got == text


def test_protocol_errors_wrong_bus_and_unknown_commands():
    async def body():
        server = SocketcandServer("can0")
        port = await server.start()

        def talk():
            s = _raw_client(port)
            s.sendall(b"< rawmode >")  # before open: unknown in NO_BUS
            _expect(s, b"< error unknown command >")
            s.sendall(b"< open can1 >")
            _expect(s, b"< error could not open bus >")
            assert s.recv(64) == b""  # and the connection is closed
            s.close()
            s = _raw_client(port)
            s.sendall(b"< open can0 >< echo >< subscribe 0 0 123 >")
            _expect(s, b"< ok >< echo >< error unknown command >")
            s.sendall(b"< rawmode >< send 123 3 1 >< echo >")  # the bad send is ignored, as the daemon does
            _expect(s, b"< ok >< echo >")
            s.sendall("< é >".encode())
            _expect(s, b"< error invalid input >")
            s.close()

        await asyncio.to_thread(talk)
        await server.stop()
    run(body())
