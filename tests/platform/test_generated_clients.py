"""The exported specs work with real tools: every `$ref` resolves, openapi-python-client builds a
client from each without dropping a response or a model, and the generated payments client moves
money against the running service with one money model (`AmountIn`) whatever the currency."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema_rs
import pytest

from services.common.clock import frozen_clock
from services.payments.main import PaymentsSettings, create_app
from tests.support.servers import serve

OPENAPI_DIR = Path(__file__).resolve().parents[2] / "openapi"
SPECS = sorted(path.stem for path in OPENAPI_DIR.glob("*.json"))
PAYING_CARD = "4242424242424242"
# No post-hooks: the generator formats its output with ruff by default, which this test needs not.
GENERATOR_CONFIG = "post_hooks: []\n"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def generate_client(spec: str, into: Path) -> tuple[Path, str]:
    """openapi-python-client's client for openapi/<spec>.json as package `<spec>_client` in `into`;
    returns the package's folder and what the generator printed."""
    config = into / "generator.yaml"
    config.write_text(GENERATOR_CONFIG)
    package = into / f"{spec}_client"
    done = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(OPENAPI_DIR / f"{spec}.json"),
         "--output-path", str(package), "--meta", "none", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return package, output


@pytest.mark.parametrize("spec", SPECS)
def test_every_reference_in_the_spec_resolves(spec: str) -> None:
    document = json.loads((OPENAPI_DIR / f"{spec}.json").read_text(encoding="utf-8"))
    uri = f"urn:fintech-sandbox:openapi:{spec}"
    resolver = jsonschema_rs.Registry([(uri, document)]).resolver(uri)
    refs = sorted(set(_refs(document)))
    assert refs, "a spec with no references tests nothing here"
    unresolved = []
    for ref in refs:
        try:
            resolver.lookup(ref)
        except jsonschema_rs.ReferencingError as exc:
            unresolved.append(f"{ref}: {exc}")
    assert not unresolved


@pytest.mark.parametrize("spec", SPECS)
def test_openapi_python_client_generates_a_whole_client(spec: str, tmp_path: Path) -> None:
    # The generator warns, and carries on, when it drops a response, a model or an operation.
    package, output = generate_client(spec, tmp_path)
    assert "warning" not in output.lower(), output
    assert (package / "client.py").is_file() and any((package / "api").iterdir())


@pytest.fixture(scope="module")
def payments_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], ModuleType]]:
    """Imports modules of the generated payments client: `payments_client("models")`."""
    into = tmp_path_factory.mktemp("generated")
    package, _ = generate_client("payments", into)
    sys.path.insert(0, str(into))
    try:
        yield lambda module: importlib.import_module(f"{package.name}.{module}")
    finally:
        sys.path.remove(str(into))
        for name in [n for n in sys.modules if n == package.name or n.startswith(f"{package.name}.")]:
            del sys.modules[name]


@pytest.fixture
def payments_url(tmp_path: Path) -> Iterator[str]:
    app = create_app(PaymentsSettings(data_dir=tmp_path, seed_demo_data=False), clock=frozen_clock())
    with serve(app) as base_url:
        yield base_url


def test_money_is_one_model_in_the_generated_client(payments_client: Callable[[str], ModuleType]) -> None:
    models = payments_client("models")
    assert not [name for name in dir(models) if name.startswith("AmountInType")]
    currencies = {c.value for c in models.AmountInCurrency}
    assert {"CNY", "JPY", "KWD", "USD"} <= currencies


def test_the_generated_client_drives_a_payment(
    payments_client: Callable[[str], ModuleType], payments_url: str
) -> None:
    m = payments_client("models")
    create_account = payments_client("api.accounts.create_account")
    get_balance = payments_client("api.accounts.get_balance")
    create_deposit = payments_client("api.movements.create_deposit")
    create_transfer = payments_client("api.movements.create_transfer")
    client = payments_client("client").Client(base_url=payments_url, raise_on_unexpected_status=True)

    def cny(amount: str) -> Any:
        return m.AmountIn(amount=amount, currency=m.AmountInCurrency.CNY)

    def open_account(owner: str) -> str:
        account = create_account.sync(client=client, body=m.AccountCreate(
            kind=m.AccountCreateKind.PERSONAL, owner_name=owner, currency=m.AccountCreateCurrency.CNY))
        assert isinstance(account, m.AccountPublic), account
        return account.id

    payer, payee = open_account("Lin Payer"), open_account("Wu Payee")
    topped_up = create_deposit.sync(client=client, idempotency_key="generated-deposit", body=m.DepositCreate(
        account_id=payer, card_number=PAYING_CARD, amount=cny("100.00")))
    assert isinstance(topped_up, m.JournalPublic), topped_up
    sent = create_transfer.sync(client=client, idempotency_key="generated-transfer", body=m.TransferCreate(
        from_account_id=payer, to_account_id=payee, amount=cny("12.34")))
    assert isinstance(sent, m.JournalPublic), sent
    assert (sent.amount.amount, sent.amount.currency) == ("12.34", "CNY")

    for account, expected in ((payer, "87.66"), (payee, "12.34")):
        balance = get_balance.sync(account, client=client)
        assert isinstance(balance, m.BalancePublic), balance
        assert (balance.available.amount, balance.available.currency) == (expected, "CNY")

    # The model takes any currency's decimals; the service holds each to its own: a documented 422.
    refused = create_transfer.sync_detailed(client=client, body=m.TransferCreate(
        from_account_id=payer, to_account_id=payee, amount=cny("12.345")))
    assert refused.status_code == 422
    problem = refused.parsed
    assert isinstance(problem, m.ProblemDetails), problem
    assert problem.type_ == "urn:fintech-sandbox:problem:validation-error"
    assert [e.field for e in problem.errors] == ["body.amount.amount"]
    assert "at most 2 decimals for CNY" in problem.errors[0].message
    assert get_balance.sync(payee, client=client).available.amount == "12.34"
