"""USB bundles (issue 3 item 6): a village with no network reaches the hub through files only.

The village exports with ``liandong node export-bundle``, the township imports with
``liandong node import-bundle --answer``, the village applies the answer; the only thing that
travels between village and township is the file. Real keys sign everything; forged bundles
are signed by real keys that are simply not the right ones.
"""

from __future__ import annotations

import pytest
from faults import (
    city_item,
    cli,
    decide,
    last_json,
    new_case,
    outbox_states,
    read_signed,
    resign,
    sha256,
    write_signed,
)

from shared.core.crypto import SigningKey


@pytest.fixture
def offline(build_network, tmp_path):
    """A network whose village cannot reach its township, with one case (and its files) queued."""
    net = build_network(villages=2)
    village = net.village(0)
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    receipt, files = new_case(village, agent, item, "bundle")
    net.township.stop()
    assert "error" in village.sync()  # the link is down: nothing leaves by network
    assert outbox_states(village) == {1: "pending"}
    usb = tmp_path / "usb"
    usb.mkdir()
    return net, village, receipt, files, usb


def export(village, path):
    return last_json(cli("node", "export-bundle", "--data", village.data_dir, "--out", path).output)


def import_at_township(township, path, answer):
    return cli("node", "import-bundle", "--data", township.data_dir, "--in", path, "--answer", answer, ok=False)


def custody_rows(township) -> list[tuple]:
    return [tuple(r) for r in township.query("SELECT origin, seq, envelope_id FROM custody ORDER BY origin, seq")]


def test_round_trip_through_files_only(offline):
    net, village, receipt, files, usb = offline
    township = net.township

    exported = export(village, usb / "out-1.bundle")
    assert exported["envelopes"] == 1 and exported["blobs"] == len(files)

    result = import_at_township(township, usb / "out-1.bundle", usb / "answer-1.bundle")
    assert result.exit_code == 0, result.output
    imported = last_json(result.output)
    assert imported["village"] == village.node_id and imported["custody"] == 1
    # Custody of the exact envelope the village signed, and every file verified by its hash.
    village_id = village.scalar("SELECT envelope_id FROM outbox WHERE seq = 1")
    assert custody_rows(township) == [(village.node_id, 1, village_id)]
    for _, _, data in files:
        assert township.node.blobs.has(sha256(data))
        assert township.node.blobs.read(sha256(data)) == data
    assert township.scalar("SELECT status FROM cases WHERE case_id = ?", (receipt["case_id"],)) == "SUBMITTED"

    cli("node", "import-bundle", "--data", village.data_dir, "--in", usb / "answer-1.bundle")
    assert outbox_states(village) == {1: "custody"}
    assert village.scalar("SELECT sync_state FROM cases WHERE case_id = ?", (receipt["case_id"],)) == "custody"

    # The township's own link to the hub works: it forwards the envelope and the files.
    township.sync()
    township.sync()
    assert net.hub.scalar("SELECT COUNT(*) FROM inbox WHERE origin = ?", (village.node_id,)) == 1
    assert net.hub.scalar("SELECT acked_seq FROM origin_heads WHERE origin = ?", (village.node_id,)) == 1
    assert custody_rows(township) == []  # released once the hub's acknowledgement covered it
    decide(net, receipt["case_id"], receipt["route"]["office"])
    township.sync()  # the decision comes down to the township's mirror for the village

    # The next trip of the stick: a new export (nothing new, but the cursors), a new answer.
    export(village, usb / "out-2.bundle")
    result = import_at_township(township, usb / "out-2.bundle", usb / "answer-2.bundle")
    assert result.exit_code == 0, result.output
    cli("node", "import-bundle", "--data", village.data_dir, "--in", usb / "answer-2.bundle")
    assert outbox_states(village) == {1: "acked"}
    case = village.query("SELECT status, sync_state FROM cases WHERE case_id = ?", (receipt["case_id"],))[0]
    assert case["status"] == "APPROVED"
    assert case["sync_state"] == "acked"


def test_importing_the_same_bundle_twice_creates_nothing_twice(offline):
    net, village, receipt, files, usb = offline
    township = net.township
    export(village, usb / "out.bundle")
    for answer in ("answer-a.bundle", "answer-b.bundle"):
        result = import_at_township(township, usb / "out.bundle", usb / answer)
        assert result.exit_code == 0, result.output
        assert last_json(result.output)["custody"] == 1  # the receipt is given again (idempotent)
    assert len(custody_rows(township)) == 1
    assert township.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (receipt["case_id"],)) == 1
    assert township.scalar("SELECT COUNT(*) FROM blobs") == len(files)
    # Both answers apply cleanly at the village, in any order, and change nothing the second time.
    cli("node", "import-bundle", "--data", village.data_dir, "--in", usb / "answer-b.bundle")
    cli("node", "import-bundle", "--data", village.data_dir, "--in", usb / "answer-a.bundle")
    assert outbox_states(village) == {1: "custody"}
    # Through the hub too: the envelope is there once.
    township.sync()
    township.sync()
    assert net.hub.scalar("SELECT COUNT(*) FROM inbox WHERE origin = ?", (village.node_id,)) == 1
    assert net.hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (receipt["case_id"],)) == 1


def _flip_one_payload_byte(raw: bytes) -> bytes:
    """Change one base64 character inside the signed payload (the file stays valid JSON)."""
    start = raw.index(b'"payload":"') + len(b'"payload":"')
    end = raw.index(b'"', start)
    i = start + (end - start) // 2
    data = bytearray(raw)
    data[i] = ord("B") if data[i] != ord("B") else ord("C")
    return bytes(data)


def assert_refused(township, bundle, answer, words: str = "bundle") -> None:
    before = (custody_rows(township), township.scalar("SELECT COUNT(*) FROM cases"))
    result = import_at_township(township, bundle, answer)
    assert result.exit_code != 0
    assert words in result.output
    assert not answer.exists()
    assert (custody_rows(township), township.scalar("SELECT COUNT(*) FROM cases")) == before


def test_a_bundle_with_one_byte_changed_is_refused(offline):
    net, village, _, _, usb = offline
    export(village, usb / "out.bundle")
    tampered = usb / "tampered.bundle"
    tampered.write_bytes(_flip_one_payload_byte((usb / "out.bundle").read_bytes()))
    assert_refused(net.township, tampered, usb / "answer.bundle")
    # The untouched file still imports.
    assert import_at_township(net.township, usb / "out.bundle", usb / "answer.bundle").exit_code == 0


def test_an_answer_with_one_byte_changed_is_refused_at_the_village(offline):
    net, village, _, _, usb = offline
    export(village, usb / "out.bundle")
    assert import_at_township(net.township, usb / "out.bundle", usb / "answer.bundle").exit_code == 0
    tampered = usb / "answer-tampered.bundle"
    tampered.write_bytes(_flip_one_payload_byte((usb / "answer.bundle").read_bytes()))
    result = cli("node", "import-bundle", "--data", village.data_dir, "--in", tampered, ok=False)
    assert result.exit_code != 0 and "bundle" in result.output
    assert outbox_states(village) == {1: "pending"}


def test_a_bundle_signed_by_another_village_is_refused(offline):
    net, village, _, _, usb = offline
    export(village, usb / "out.bundle")
    document = read_signed(usb / "out.bundle")
    other_village = net.village(1)
    # Signed by a registered village below the same township, claiming to come from ours.
    forged = write_signed(usb / "other.bundle", resign(document, other_village.node.key))
    assert_refused(net.township, forged, usb / "answer.bundle")
    # Signed by a key nobody registered.
    stranger = write_signed(usb / "stranger.bundle", resign(document, SigningKey.generate()))
    assert_refused(net.township, stranger, usb / "answer.bundle")


def test_a_bundle_addressed_to_another_township_is_refused(offline, build_network):
    net, village, _, _, usb = offline
    export(village, usb / "out.bundle")
    # The village's own signature, but addressed to another township.
    redirected = write_signed(usb / "redirected.bundle",
                              resign(read_signed(usb / "out.bundle"), village.node.key, to="130926101"))
    assert_refused(net.township, redirected, usb / "answer.bundle")

    # A real bundle of a village below another township, carried to the wrong station.
    other = net.add_township("130926101")
    far = net.add_village("130926101201")
    agent = far.account("agent", "agent")
    new_case(far, agent, city_item(far, agent), "far")
    other.stop()
    export(far, usb / "far.bundle")
    assert_refused(net.township, usb / "far.bundle", usb / "answer.bundle")


def test_a_bundle_larger_than_a_small_push_is_followed_before_its_answer(build_network, tmp_path):
    """More envelopes than a push followed in its answer (FOLLOW_INLINE_MAX_ENVELOPES): the
    township follows them all before writing the answer, so a 秒批 it decides travels back on
    the same stick (the next trip may be a week away)."""
    from network import case_payload, catalog

    net = build_network(villages=1)
    village, township = net.village(0), net.township
    agent = village.account("agent", "agent")
    item = next(i for i in catalog(village, agent) if i["code"] == "130926-WJ-0001")  # 生育登记, township 秒批
    case_ids = []
    for _ in range(12):
        payload = case_payload(item)
        payload["form"].update(child_order="第一个子女")
        response = village.api("POST", "/api/v1/cases", agent, json=payload)
        assert response.status_code == 201, response.text
        case_ids.append(response.json()["case_id"])
    net.township.stop()
    usb = tmp_path / "usb"
    usb.mkdir()
    export(village, usb / "out.bundle")
    result = import_at_township(township, usb / "out.bundle", usb / "answer.bundle")
    assert result.exit_code == 0, result.output
    assert last_json(result.output)["custody"] == 12
    cli("node", "import-bundle", "--data", village.data_dir, "--in", usb / "answer.bundle")
    statuses = {r[0] for r in village.conn.execute(
        f"SELECT status FROM cases WHERE case_id IN ({','.join('?' * len(case_ids))})", case_ids)}
    assert statuses == {"APPROVED"}
