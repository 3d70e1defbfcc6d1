"""The explorer: its endpoints answer bad input with a message and keep running, twenty concurrent clients
get answers, and a real browser draws a box, reads the region's concepts and sees an edit change the
prediction."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from sparse_cbm.trained import SparseCBM
from sparse_cbm_app.explorer.server import create_app
from tests.browser import browser_page, draw_box, running, set_slider
from tests.trained_fixture import CLASSES, CONCEPTS, build_tiny_model, picture


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return SparseCBM.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("explorer")))


@pytest.fixture(scope="module")
def url(model):
    with running(create_app(model)) as base:
        yield base


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_the_server_binds_to_this_machine_only_by_default():
    from sparse_cbm_app.cli.main import build_parser

    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"


def test_model_gallery_and_images(url):
    info = requests.get(f"{url}/api/model", timeout=30).json()
    assert info["classes"] == CLASSES and info["spatial_concepts"] == CONCEPTS and info["gallery"]["count"] == 12
    page = requests.get(f"{url}/api/gallery", params={"offset": 10, "limit": 5}, timeout=30).json()
    assert page["count"] == 12 and [i["id"] for i in page["items"]] == ["g10", "g11"]
    image = requests.get(f"{url}/api/image/g0.png", timeout=30)
    assert image.headers["content-type"] == "image/png" and Image.open(io.BytesIO(image.content)).size == (64, 64)


def test_bad_input_gets_a_message_and_the_server_keeps_running(url):
    def post(path, **kw):
        return requests.post(f"{url}{path}", timeout=30, **kw)

    cases = [
        (post("/api/upload", data=b"this is not an image"), 400, "not an image this tool can read"),
        (post("/api/upload", data=b""), 400, "the upload is empty"),
        (post("/api/explain", json={"image": "g0", "box": [0, 0, 999, 10]}), 400, "is not inside the 64 x 64 image"),
        (post("/api/explain", json={"image": "g0", "concept": "redd", "beta": 1}), 400, "did you mean 'red'"),
        (post("/api/explain", json={"image": "g999"}), 404, "no image 'g999'"),
        (post("/api/explain", json={"image": "g0", "box": [1, 2]}), 400, "four numbers"),
        (post("/api/explain", json={"image": "g0", "point": [70, 2]}), 400, "outside the 64 x 64 image"),
        (post("/api/explain", json={"image": "g0", "point": [7, 2], "box": [0, 0, 9, 9]}), 400, "not both"),
    ]
    for response, status, message in cases:
        assert response.status_code == status and message in response.json()["error"], response.text
    huge = png_bytes(Image.new("RGB", (8000, 7000)))
    response = post("/api/upload", data=huge)
    assert response.status_code == 400 and "the limit is 50 M" in response.json()["error"]
    assert requests.get(f"{url}/api/model", timeout=30).status_code == 200


def test_an_upload_is_explained(url):
    r = requests.post(f"{url}/api/upload", data=png_bytes(picture(40, size=100).crop((0, 0, 100, 80))), timeout=30)
    key = r.json()["id"]
    assert r.json()["side"] == 80  # its centred square
    out = requests.post(f"{url}/api/explain", json={"image": key, "box": [10, 10, 50, 50]}, timeout=30).json()
    assert out["truth"] is None and out["salf"]["region"] == "box" and len(out["salf"]["concepts"]) == 3


def test_twenty_concurrent_requests_get_the_answers_they_get_one_at_a_time(url):
    def ask(i):
        r = requests.post(f"{url}/api/explain", json={"image": f"g{i % 12}", "box": [i % 20, 0, 40 + i % 20, 40],
                                                       "concept": "red", "beta": -3}, timeout=60)
        return r.status_code, r.json()

    serial = [ask(i) for i in range(20)]
    start = time.perf_counter()
    with ThreadPoolExecutor(20) as pool:
        concurrent = list(pool.map(ask, range(20)))
    assert time.perf_counter() - start < 60
    assert all(status == 200 for status, _ in concurrent) and concurrent == serial


def test_requests_to_another_host_or_from_another_origin_are_refused(url):
    r = requests.get(f"{url}/api/model", headers={"Host": "attacker.example"}, timeout=30)
    assert r.status_code == 403 and "localhost only" in r.json()["error"]
    r = requests.post(f"{url}/api/upload", data=b"x", headers={"Origin": "http://attacker.example"}, timeout=30)
    assert r.status_code == 403 and "another origin" in r.json()["error"]
    r = requests.post(f"{url}/api/explain", json={"image": "g0", "top": 0}, timeout=30)
    assert r.status_code == 400 and r.json()["error"].startswith("top:")


def test_a_browser_draws_a_box_reads_its_concepts_and_an_edit_changes_the_prediction(url):
    with browser_page() as page:
        page.goto(url)
        page.locator(".thumb").first.click()
        page.wait_for_function("document.getElementById('cbm-prediction').textContent !== '–'")
        assert page.inner_text("#truth") == CLASSES[0]
        draw_box(page, 0.1, 0.1, 0.8, 0.8)
        page.wait_for_function("document.getElementById('salf-region').textContent === 'box'")
        concepts = [li.get_attribute("data-concept") for li in page.locator("#region-concepts li").all()]
        assert len(concepts) == 3 and set(concepts) <= set(CONCEPTS)
        assert page.locator("#heatmaps .heat").count() == 3
        canvas = page.locator("#canvas").bounding_box()
        page.mouse.click(canvas["x"] + canvas["width"] * 0.3, canvas["y"] + canvas["height"] * 0.3)
        page.wait_for_function("document.getElementById('salf-region').textContent === 'point'")
        assert page.inner_text("#region-label").startswith("region: point ")
        draw_box(page, 0.1, 0.1, 0.8, 0.8)
        page.wait_for_function("document.getElementById('salf-region').textContent === 'box'")
        before = page.inner_text("#salf-prediction")
        assert before in ("apple", "leaf")
        page.select_option("#edit-concept", "red")
        set_slider(page, -10 if before == "apple" else 10)
        page.wait_for_function("document.getElementById('edited-prediction').textContent !== "
                               "document.getElementById('salf-prediction').textContent", timeout=20000)
        assert page.inner_text("#edited-prediction") == ("leaf" if before == "apple" else "apple")
        page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
        page.wait_for_selector("#error:not([hidden])")
        assert "not an image this tool can read" in page.inner_text("#error")
