"""Photos on work orders over real HTTP: images only (by their bytes), size-limited, served back."""

from __future__ import annotations

from tests.api.workorder_helpers import WORKORDERS, create_order

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + b"JFIF" + bytes(1000)
WEBP = b"RIFF" + (1000).to_bytes(4, "little") + b"WEBPVP8 " + bytes(1000)


async def test_images_are_stored_and_served_back(seoul, busan):
    order = await create_order(seoul.client, location={"lat": 37.5, "lon": 127.0})
    url = f"{WORKORDERS}/{order['id']}/attachments"
    stored = []
    for content, media_type in ((PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp")):
        # The header is not believed: the bytes say what the image is.
        response = await seoul.client.post(url, content=content, headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 201, response.text
        assert (response.json()["media_type"], response.json()["size_bytes"]) == (media_type, len(content))
        stored.append((response.json()["id"], content, media_type))
    listed = (await seoul.client.get(url)).json()
    assert [a["id"] for a in listed] == [s[0] for s in stored]
    for attachment_id, content, media_type in stored:
        served = await seoul.client.get(f"{url}/{attachment_id}")
        assert served.status_code == 200 and served.content == content
        assert served.headers["content-type"] == media_type
    assert (await busan.client.get(f"{url}/{stored[0][0]}")).status_code == 404
    audit = (await seoul.client.get("/api/v1/audit", params={"action": "work_order.attachment.add"})).json()
    assert len(audit["items"]) == 3


async def test_anything_but_a_small_image_is_refused(seoul):
    order = await create_order(seoul.client, location={"lat": 37.5, "lon": 127.0})
    url = f"{WORKORDERS}/{order['id']}/attachments"
    for content in (b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"GIF89a" + bytes(100), b"%PDF-1.7", b""):
        response = await seoul.client.post(url, content=content, headers={"Content-Type": "image/png"})
        assert response.status_code == 415, content
        assert response.headers["content-type"].startswith("application/problem+json")
    too_big = await seoul.client.post(url, content=PNG + bytes(5 * 1024 * 1024), headers={"Content-Type": "image/png"})
    assert too_big.status_code == 413
    assert (await seoul.client.get(url)).json() == []
