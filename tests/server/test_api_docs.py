"""/docs works at an air-gapped site: every URL the page loads is served by the verifier."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from tdx_boot_attest.server.app import create_app
from tdx_boot_attest.server.db.migrate import upgrade
from tdx_boot_attest.server.settings import Settings

# Attribute URLs (src=, href=) and the URLs the page's script passes to Swagger UI.
PAGE_URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")


def test_the_docs_page_loads_only_same_origin_urls_that_exist(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'api.sqlite'}"
    upgrade(url)
    with TestClient(create_app(Settings(database_url=url, dev_mode=True))) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        html = page.text
        assert "://" not in html, "the page names another origin"
        urls = [first or second for first, second in PAGE_URL.findall(html)]
        assert any(u.endswith("swagger-ui-bundle.js") for u in urls), urls
        assert any(u.endswith("swagger-ui.css") for u in urls), urls
        assert "/openapi.json" in urls
        for target in urls:
            assert target.startswith("/") and not target.startswith("//"), target
            answer = client.get(target)
            assert answer.status_code == 200, target
            assert answer.content, target
        assert client.get("/redoc").status_code == 404
