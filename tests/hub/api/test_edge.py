"""The HTTP edge, tested as an attacker would: forged Host headers, oversized and chunked bodies, large inputs
echoed back, missing security headers; and the hub's own TLS listener on a real uvicorn."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.api.deps import get_now
from hub.app import MAX_ECHOED_CHARS, HubStartupError, serve
from hub.settings import HubSettings, load_hub_settings
from launcher.broker import free_port
from storegate.configfile import ConfigError
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.hub.conftest import RunningHub, running_hub, token_in_database

ADJUST = "/api/v1/stores/store-0001/stock/adjustments"
SMALL_BODY_LIMIT = 4096


def refused(hub: RunningHub, status: int) -> float:
    value = hub.runtime.metrics.registry.get_sample_value("storegate_hub_api_refused_total", {"status": str(status)})
    return value or 0.0


@pytest.fixture
def hub_settings(hub_settings: HubSettings) -> HubSettings:
    """The usual test hub with a small body limit, so the limit is crossed without megabytes."""
    return hub_settings.model_copy(update={"http_max_body_bytes": SMALL_BODY_LIMIT})


# --------------------------------------------------------------------------- headers


async def test_every_answer_carries_the_security_headers_and_no_store(hub: RunningHub) -> None:
    for path in ("/api/v1/stores", "/healthz", "/api/v1/nowhere", "/openapi.json"):
        response = await hub.client.get(path)
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["x-frame-options"] == "DENY", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["cache-control"] == "no-store", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "strict-transport-security" not in headers, f"{path}: HSTS over plain HTTP"
    assert (await hub.client.get("/api/v1/stores")).headers["content-security-policy"].startswith("default-src 'none'")


async def test_even_a_500_carries_the_security_headers(hub: RunningHub) -> None:
    def broken() -> datetime:
        raise RuntimeError("a bug")

    # A bug inside a real route (a route added here would have no access policy and be refused, 403).
    hub.app.dependency_overrides[get_now] = broken
    transport = httpx.ASGITransport(app=hub.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", headers=hub.client.headers
    ) as client:
        response = await client.get("/api/v1/gateways")

    assert response.status_code == 500
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")


async def test_the_console_csp_allows_the_hubs_own_scripts_and_styles_and_nothing_inline(hub: RunningHub) -> None:
    response = await hub.client.get("/")

    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self';" in csp
    assert "style-src 'self';" in csp
    assert "unsafe-inline" not in csp
    assert "<style" not in response.text
    assert "<script>" not in response.text  # every script is a file under /static
    assert re.findall(r"<script ([^>]*)>", response.text)
    assert all('src="/static/' in tag for tag in re.findall(r"<script ([^>]*)>", response.text))


# --------------------------------------------------------------------------- Host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000"])
async def test_the_loopback_names_are_answered_by_default(hub: RunningHub, host: str) -> None:
    response = await hub.client.get("/api/v1/stores", headers={"host": host})

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("host", ["attacker.example", "127.0.0.1.attacker.example", "localhost.", "", "[::2]"])
async def test_a_foreign_host_is_a_400_in_words_counted_before_the_api_runs(hub: RunningHub, host: str) -> None:
    # DNS rebinding: a page of attacker.example, resolved to 127.0.0.1, reaching the hub from a browser.
    response = await hub.client.post(ADJUST, headers={"host": host}, json={"sku_id": "A"})

    assert response.status_code == 400
    assert response.json() == {
        "detail": f"this hub does not answer to the host {host.lower().strip('[]')!r}; see http_allowed_hosts"
    }
    assert response.headers["x-frame-options"] == "DENY"
    assert refused(hub, 400) == 1


async def test_configured_hosts_replace_the_default_and_may_match_subdomains(hub_settings: HubSettings) -> None:
    settings = hub_settings.model_copy(update={"http_allowed_hosts": ["hub.example.com", "*.stores.example.com"]})
    async with running_hub(settings) as hub:
        statuses = {
            host: (await hub.client.get("/healthz", headers={"host": host})).status_code
            for host in ("hub.example.com", "hub.example.com:443", "a.stores.example.com", "stores.example.com")
        }
        statuses["127.0.0.1"] = (await hub.client.get("/healthz", headers={"host": "127.0.0.1"})).status_code
    assert {host: status != 400 for host, status in statuses.items()} == {
        "hub.example.com": True,
        "hub.example.com:443": True,
        "a.stores.example.com": True,
        "stores.example.com": False,
        "127.0.0.1": False,
    }


# --------------------------------------------------------------------------- body size


async def test_a_body_declared_larger_than_the_limit_is_a_413_before_it_is_read(hub: RunningHub) -> None:
    body = b'{"sku_id": "' + b"A" * SMALL_BODY_LIMIT + b'"}'

    response = await hub.client.post(ADJUST, content=body, headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert response.json() == {"detail": f"the request body is larger than the {SMALL_BODY_LIMIT} bytes allowed here"}
    assert response.headers["x-content-type-options"] == "nosniff"
    assert refused(hub, 413) == 1


async def test_a_chunked_body_without_length_is_cut_off_at_the_limit(hub: RunningHub) -> None:
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"sku_id": "'
        for _ in range(1000):  # 1 MB offered, in 1 kB chunks
            sent.append(1024)
            yield b"A" * 1024

    response = await hub.client.post(ADJUST, content=endless(), headers={"content-type": "application/json"})

    assert response.status_code == 413, response.text
    assert response.json()["detail"] == f"the request body is larger than the {SMALL_BODY_LIMIT} bytes allowed here"
    assert "content-length" not in response.request.headers
    assert sum(sent) <= 2 * SMALL_BODY_LIMIT, "the hub read on past the limit"


async def test_a_csv_import_may_be_larger_than_other_bodies(hub: RunningHub) -> None:
    rows = "".join(f"SKU-{i},Item {i},,1,1.00,GBP\n" for i in range(2000))
    csv = ("sku_id,name,gtin,pack_size,price,currency\n" + rows).encode()
    assert len(csv) > SMALL_BODY_LIMIT

    response = await hub.client.post("/api/v1/catalog/skus/import", content=csv, headers={"content-type": "text/csv"})

    assert response.status_code != 413, response.text


# --------------------------------------------------------------------------- 422 bodies


async def test_a_422_never_echoes_a_large_input_back(hub_settings: HubSettings) -> None:
    settings = hub_settings.model_copy(update={"http_max_body_bytes": 8 * 1024 * 1024})
    async with running_hub(settings) as hub:
        long_text = "x" * 3_000_000
        as_text = await hub.client.post(ADJUST, json={"sku_id": long_text, "quantity": 1, "note": "b"})
        as_list = await hub.client.post(ADJUST, json=[{"sku_id": "A"}] * 100_000)

    assert (as_text.status_code, as_list.status_code) == (422, 422)
    assert len(as_text.content) < 2048
    assert len(as_list.content) < 2048
    (issue,) = as_text.json()["detail"]
    assert issue["loc"] == ["body", "sku_id"]
    assert issue["input"] == "x" * MAX_ECHOED_CHARS + "\u2026"
    (issue,) = as_list.json()["detail"]
    assert issue["type"] == "model_attributes_type"
    assert "input" not in issue
    assert as_list.json()["message"] == "request: Input should be a valid dictionary or object to extract fields from"


# --------------------------------------------------------------------------- the OpenAPI document


async def test_every_operation_documents_the_error_models_and_none_is_fastapis_default(hub: RunningHub) -> None:
    spec = (await hub.client.get("/openapi.json")).json()

    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert {"Problem", "ValidationProblem", "ValidationIssue"} <= set(spec["components"]["schemas"])
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("400", "413"):
                assert responses[status]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")
            # /healthz answers 503 with its own HealthOut; everything else with a Problem.
            assert "$ref" in responses["503"]["content"]["application/json"]["schema"]
            schema = responses["422"]["content"]["application/json"]["schema"]["$ref"]
            expected = "/ImportErrorOut" if path.endswith("/import") else "/ValidationProblem"
            assert schema.endswith(expected), f"{method.upper()} {path}: 422 is {schema}"


# --------------------------------------------------------------------------- uvicorn with TLS, and behind a proxy


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, valid for a day, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "storegate hub test")])
    now = datetime.now(UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1")), x509.IPAddress(IPv6Address("::1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "hub.crt", directory / "hub.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


async def answers(client: httpx.AsyncClient, path: str) -> bool:
    try:
        return (await client.get(path)).status_code == 200
    except httpx.TransportError:
        return False


async def test_serve_over_tls_on_loopback_with_hsts(
    sqlite_url: str, mqtt_settings: MqttSettings, tmp_path: Path
) -> None:
    cert_file, key_file = self_signed(tmp_path)
    port = free_port()
    settings = load_hub_settings(
        None,
        database_url=sqlite_url,
        mqtt=mqtt_settings,
        http_port=port,
        http_tls_certfile=cert_file,
        http_tls_keyfile=key_file,
    )
    trust = ssl.create_default_context(cafile=str(cert_file))
    reader = {"Authorization": f"Bearer {await token_in_database(sqlite_url, 'viewer')}"}
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop=stop))
    try:
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=5, headers=reader
        ) as client:
            await eventually(lambda: answers(client, "/healthz"), timeout=10, what="the hub to answer over HTTPS")
            response = await client.get("/api/v1/stores")
            assert response.status_code == 200
            assert response.headers["strict-transport-security"] == "max-age=31536000"
            assert response.extensions["network_stream"].get_extra_info("ssl_object").version() in {
                "TLSv1.2",
                "TLSv1.3",
            }
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get("/api/v1/stores")
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", timeout=5) as untrusting:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get("/api/v1/stores")
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=10)


@pytest.mark.parametrize("trusted", [[], ["127.0.0.1"]])
async def test_forwarded_headers_count_only_from_a_trusted_proxy(
    sqlite_url: str, mqtt_settings: MqttSettings, trusted: list[str]
) -> None:
    port = free_port()
    settings = load_hub_settings(
        None, database_url=sqlite_url, mqtt=mqtt_settings, http_port=port, http_trusted_proxies=trusted
    )
    reader = {"Authorization": f"Bearer {await token_in_database(sqlite_url, 'viewer')}"}
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop=stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5, headers=reader) as client:
            await eventually(lambda: answers(client, "/healthz"), timeout=10, what="the hub to answer")
            # What a TLS-terminating proxy says; anyone else saying it must not make the hub believe it is on https.
            response = await client.get("/api/v1/stores", headers={"x-forwarded-proto": "https"})
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=10)
    assert response.status_code == 200
    assert ("strict-transport-security" in response.headers) is bool(trusted)


async def test_a_key_that_does_not_match_the_certificate_fails_the_start_in_words(
    sqlite_url: str, tmp_path: Path
) -> None:
    cert_file, _ = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key = self_signed(tmp_path / "other")
    settings = load_hub_settings(
        None,
        database_url=sqlite_url,
        http_port=free_port(),
        mqtt={"port": free_port()},
        http_tls_certfile=cert_file,
        http_tls_keyfile=other_key,
    )
    with pytest.raises(HubStartupError, match=f"cannot use the TLS certificate {cert_file} with the key {other_key}"):
        await asyncio.wait_for(serve(settings), timeout=10)


def test_a_certificate_without_its_key_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="http_tls_certfile and http_tls_keyfile go together"):
        load_hub_settings(None, http_tls_certfile=tmp_path / "hub.crt")
