from conftest import pnbridge


async def test_get_report_is_stored(start_daemon):
    daemon = await start_daemon()
    r = await daemon.client.get(
        "/token/", params={"username": "u", "selector": "S", "token_msgs": "a+b/c="}
    )
    assert r.status_code == 200 and r.content == b""
    assert "content-type" not in r.headers
    (device,) = daemon.store().devices()
    assert device.token_msgs == "a+b/c="


def test_check_config_defaults():
    result = pnbridge("check-config")
    assert result.returncode == 0, result.stderr
