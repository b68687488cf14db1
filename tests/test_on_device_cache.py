"""The on-device page's service worker keeps one copy of each file, whatever query string a link adds (issue 20: it
cached every in-scope URL with its query string, so the cache grew by one page per distinct link)."""

from __future__ import annotations

import pytest

from tests.test_on_device import launched, open_page
from tests.web_packages import make_three_packages

pytestmark = pytest.mark.browser

COUNT = "() => caches.open('skin-demo-on-device-v1').then(c => c.keys()).then(keys => keys.length)"
FETCH = """async ([paths, n]) => {
  for (let i = 0; i < n; i++) for (const p of paths) await fetch(`${p}?utm_source=link${i}`);
}"""
PATHS = ["./", "manifest.json", "app.js", "style.css"]


def test_links_with_query_strings_do_not_grow_the_offline_cache(browser, tmp_path):
    with launched(tmp_path, make_three_packages(tmp_path / "models")) as app:
        page = open_page(browser, app.page_url)
        page.wait_for_function("() => navigator.serviceWorker.controller !== null")
        page.evaluate(FETCH, [PATHS, 1])  # each file once through the worker
        before = page.evaluate(COUNT)
        page.evaluate(FETCH, [PATHS, 25])
        after = page.evaluate(COUNT)
        page.context.set_offline(True)
        offline = page.evaluate("() => fetch('./?utm_source=offline').then(r => r.status)")
        page.context.close()
    assert after == before, f"{after - before} cache entries for 100 links to {len(PATHS)} files"
    assert offline == 200, "a link with a query string still opens the page offline"
