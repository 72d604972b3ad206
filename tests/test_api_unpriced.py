"""GET lcm/api/pricing lists the models called without a price, until one covers them."""

from __future__ import annotations

import time

from lcm_jupyter.store import logs as log_table

from .conftest import openai_via


async def test_unpriced_models_are_listed_until_priced(api, make_key, base_url, logs, lcm):
    status, table = await api("GET", "pricing")
    assert status == 200 and table["unpriced_models"] == []
    client = openai_via(base_url, (await make_key())["key"])
    for model in ("gpt-unknown-model", "gpt-unknown-model", "gpt-4o-mini"):
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "what does it cost?"}]
        )
    rows = await logs()
    assert [r["cost_usd"] is None for r in rows] == [False, True, True]

    status, table = await api("GET", "pricing")
    assert status == 200
    (seen,) = table["unpriced_models"]
    assert seen["model"] == "gpt-unknown-model" and seen["provider"] == "openai"
    assert seen["requests"] == 2
    # last_seen is the start of the 15 minutes of the latest such call, in UTC.
    assert seen["last_seen"].endswith("Z") and seen["last_seen"] <= rows[1]["created_at"]
    assert rows[1]["created_at"][:13] == seen["last_seen"][:13]

    # Pricing it takes it off the list (the calls already logged stay unpriced).
    price = {"model": "gpt-unknown-model", "provider": "openai", "input": "1", "output": "2"}
    status, table = await api("PUT", "pricing", price)
    assert status == 200 and table["unpriced_models"] == []
    assert (await api("DELETE", "pricing/gpt-unknown-model"))[0] == 200
    assert [m["model"] for m in (await api("GET", "pricing"))[1]["unpriced_models"]] == [
        "gpt-unknown-model"
    ]
    # Only calls from the UTC day of `since` on count.
    assert await lcm.store.run(log_table.unpriced_models, int(time.time()) + 86400) == []
