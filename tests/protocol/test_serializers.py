"""Serializers (PROTOCOL.md §2): V2 arrays, V1 objects, V2 binary frames, vsn negotiation."""

import orjson
import pytest

from chanctl.errors import ProtocolViolation
from chanctl.protocol import Broadcast, Message, Reply, V1Json, V2Json, negotiate
from chanctl.protocol.messages import same_ref
from chanctl.protocol.serializers import BinaryFrame

V2, V1 = V2Json(), V1Json()


def test_binary_push_decodes_per_the_spec_example():
    frame = bytes([0, 2, 3, 5, 5]) + b"12" + b"123" + b"topic" + b"event" + bytes([0x65, 0x66, 0x67])
    assert V2.decode(frame) == Message("12", "123", "topic", "event", b"efg")


def test_binary_encodings_match_the_spec():
    reply = V2.encode(Reply("12", "123", "topic", "ok", b"efg"))
    assert isinstance(reply, BinaryFrame)
    assert reply == bytes([1, 2, 3, 5, 2]) + b"12" + b"123" + b"topic" + b"ok" + b"efg"
    push = V2.encode(Message("1", None, "room:lobby", "blob", b"\x01"))
    assert push == bytes([0, 1, 10, 4]) + b"1" + b"room:lobby" + b"blob" + b"\x01"
    broadcast = V2.encode(Broadcast("room:lobby", "blob", b"\x01"))
    assert broadcast == bytes([2, 10, 4]) + b"room:lobby" + b"blob" + b"\x01"


def test_binary_null_refs_are_empty_fields():
    # Read back as Phoenix's serializer reads them: "" (not null), so not a join_ref wildcard.
    assert V2.decode(bytes([0, 0, 0, 1, 1]) + b"te") == Message("", "", "t", "e", b"")
    assert V2.encode(Reply(None, None, "t", "ok", b"")) == bytes([1, 0, 0, 1, 2]) + b"tok"


@pytest.mark.parametrize(
    "frame, words",
    [
        (b"", "kind (empty)"),
        (bytes([1, 0, 0, 1, 1]) + b"te", "kind 1"),
        (bytes([0, 0, 0]), "5-byte header"),
        (bytes([0, 0, 0, 9, 1]) + b"te", "inside its topic"),
        (bytes([0, 0, 0, 1, 1]) + b"\xff" + b"e", "topic is not UTF-8"),
    ],
)
def test_bad_binary_frames_are_protocol_violations(frame, words):
    with pytest.raises(ProtocolViolation) as info:
        V2.decode(frame)
    assert words in info.value.reason and info.value.code == 1007


def test_binary_fields_longer_than_255_bytes_cannot_be_encoded():
    with pytest.raises(ProtocolViolation, match="at most 255"):
        V2.encode(Broadcast("t" * 256, "e", b""))


@pytest.mark.parametrize(
    "text, words",
    [
        ("nope", "not valid JSON"),
        ('["1","1","t","e"]', "JSON array"),
        ('{"topic":"t"}', "JSON array"),
        ('["' + "x" * 256 + '","1","t","e",{}]', "join_ref is 256 bytes; a ref may have at most 255"),
        ('["1","' + "\u00e9" * 128 + '","t","e",{}]', "ref is 256 bytes"),
        ('["1",{"k":"' + "x" * 250 + '"},"t","e",{}]', "ref is 258 bytes"),
        ('["1",[' + ",".join(["1"] * 128) + '],"t","e",{}]', "ref is 257 bytes"),
        ('["1","1",null,"e",{}]', "topic must be a string"),
    ],
)
def test_bad_v2_text_frames_are_protocol_violations(text, words):
    with pytest.raises(ProtocolViolation) as info:
        V2.decode(text)
    assert words in info.value.reason


REFS = [
    "7", 7, 0, -3, 18446744073709551615, 1.5, True, False, None, [1, "a"], {"n": 1}, "", "\u00e9" * 127, "x" * 255,
]
"""Refs as clients send them: phoenix.js's strings, integers (V1-era clients), and whatever else JSON
can say, which Phoenix echoes unchanged; the last two are at the 255-byte limit."""


@pytest.mark.parametrize("ref", REFS)
def test_v2_refs_are_any_json_value_and_come_back_unchanged(ref):
    msg = V2.decode(orjson.dumps([ref, ref, "t", "e", {}]).decode())
    assert msg == Message(ref, ref, "t", "e", {}) and type(msg.ref) is type(ref) and type(msg.join_ref) is type(ref)
    reply = orjson.loads(V2.encode(Reply(msg.join_ref, msg.ref, "t", "ok", {})))
    assert reply == [ref, ref, "t", "phx_reply", {"status": "ok", "response": {}}]
    assert type(reply[0]) is type(ref) and type(reply[1]) is type(ref)


@pytest.mark.parametrize("ref", REFS)
def test_v1_refs_are_any_json_value_and_come_back_unchanged(ref):
    msg = V1.decode(orjson.dumps({"topic": "t", "event": "e", "payload": {}, "ref": ref, "join_ref": ref}).decode())
    assert (msg.join_ref, msg.ref) == (ref, ref) and type(msg.ref) is type(ref)
    reply = orjson.loads(V1.encode(Reply(msg.join_ref, msg.ref, "t", "ok", {})))
    assert reply["ref"] == ref and type(reply["ref"]) is type(ref)


@pytest.mark.parametrize("ref, text", [(7, b"7"), (1.5, b"1.5"), (True, b"true"), (None, b""), ("12", b"12")])
def test_a_binary_reply_carries_a_number_or_boolean_ref_as_its_text(ref, text):
    """Phoenix writes ``to_string(ref)`` into a binary frame: the integer 7 becomes "7"."""
    reply = V2.encode(Reply(ref, ref, "t", "ok", b"\x01"))
    assert reply == bytes([1, len(text), len(text), 1, 2]) + text + text + b"tok\x01"
    push = V2.encode(Message(ref, None, "t", "e", b"\x01"))
    assert push == bytes([0, len(text), 1, 1]) + text + b"te\x01"


@pytest.mark.parametrize("ref", [[1], {"n": 1}])
def test_a_binary_reply_cannot_carry_an_array_or_object_ref(ref):
    with pytest.raises(ProtocolViolation, match="binary frame carries only text") as info:
        V2.encode(Reply(ref, "1", "t", "ok", b""))
    assert info.value.code == 1011


def test_same_ref_is_phoenixs_strict_equality():
    assert same_ref(1, 1) and same_ref("1", "1") and same_ref(None, None) and same_ref({"a": 1, "b": [2]}, {"b": [2], "a": 1})
    assert not same_ref(1, "1") and not same_ref(1, True) and not same_ref(1, 1.0) and not same_ref(0, False)
    assert not same_ref({"a": 1}, {"a": True}) and not same_ref([1], [1.0]) and not same_ref([1], {"1": 1})


def test_v2_takes_the_first_five_elements():
    assert V2.decode('["1","2","t","e",[1],"extra"]') == Message("1", "2", "t", "e", [1])


def test_v1_decodes_objects_and_never_encodes_join_ref():
    msg = V1.decode('{"topic":"room:lobby","event":"phx_join","payload":{},"ref":"1"}')
    assert msg == Message(None, "1", "room:lobby", "phx_join", {})
    assert V1.decode('{"topic":"t","event":"e","payload":1,"ref":null,"join_ref":"3"}').join_ref == "3"
    reply = orjson.loads(V1.encode(Reply("1", "1", "room:lobby", "ok", {})))
    assert reply == {"topic": "room:lobby", "event": "phx_reply", "payload": {"status": "ok", "response": {}}, "ref": "1"}
    assert orjson.loads(V1.encode(Broadcast("room:lobby", "shout", {"m": 1}))) == {
        "topic": "room:lobby", "event": "shout", "payload": {"m": 1}, "ref": None}
    with pytest.raises(ProtocolViolation, match="missing payload, ref"):
        V1.decode('{"topic":"t","event":"e"}')
    with pytest.raises(ProtocolViolation, match="JSON object"):
        V1.decode("[]")


@pytest.mark.parametrize(
    "vsn, expected",
    [(None, V1Json), ("1.0.0", V1Json), ("2.0.0", V2Json), ("2.0.7", V2Json), ("2.1.0", None), ("3.0.0", None),
     ("abc", None), (["x"], None)],
)
def test_vsn_negotiation(vsn, expected):
    found = negotiate(vsn)
    assert (found is None) if expected is None else isinstance(found, expected)
