"""One secret per database: a server or `jupyter lcm` with another secret is refused at
start with how to share it, instead of a bare InvalidToken on every call."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from lcm_jupyter import cli
from lcm_jupyter.core.keyspec import validate_key_fields
from lcm_jupyter.core.secretbox import SecretBox, SecretMismatch
from lcm_jupyter.core.settings import Settings
from lcm_jupyter.server.services import LCMServices
from lcm_jupyter.store.db import open_database
from lcm_jupyter.store.keys import create_key
from lcm_jupyter.store.secret import check_secret


def _settings(tmp_path, secret: bytes) -> Settings:
    return Settings(
        db_path=tmp_path / "lcm.sqlite3",
        secret_key=secret.decode(),
        secret_key_file=tmp_path / "unused.key",
    )


def _key_under(db, secret: bytes) -> None:
    fields = validate_key_fields(
        {"name": "k", "provider_api_keys": {"openai": "sk-test"}}, partial=False
    )
    create_key(db, SecretBox(secret), fields)


def test_a_server_with_another_secret_refuses_to_start_and_says_how_to_share_it(tmp_path):
    first, second = Fernet.generate_key(), Fernet.generate_key()
    LCMServices(_settings(tmp_path, first))  # records the database's secret
    with pytest.raises(SecretMismatch) as err:
        LCMServices(_settings(tmp_path, second))
    message = str(err.value)
    assert str(tmp_path / "lcm.sqlite3") in message and "secret_key" in message
    assert first.decode() not in message and second.decode() not in message
    LCMServices(_settings(tmp_path, first))  # the right one still opens it


def test_the_check_value_is_stored_not_the_secret(tmp_path):
    secret = Fernet.generate_key()
    db = open_database(tmp_path / "lcm.sqlite3")
    check_secret(db, SecretBox(secret), db_path="x", secret_file=tmp_path / "s")
    ((value,),) = db.execute("SELECT value FROM lcm_meta").fetchall()
    assert value == SecretBox(secret).check_value and secret.decode() not in value
    assert SecretBox(Fernet.generate_key()).check_value != value


def test_a_database_from_before_the_check_is_judged_by_its_stored_keys(tmp_path):
    old, other = Fernet.generate_key(), Fernet.generate_key()
    db = open_database(tmp_path / "lcm.sqlite3")
    _key_under(db, old)  # written before lcm_meta had its row
    assert db.execute("SELECT COUNT(*) FROM lcm_meta").fetchone() == (0,)
    with pytest.raises(SecretMismatch):
        check_secret(db, SecretBox(other), db_path="x", secret_file=tmp_path / "s")
    assert db.execute("SELECT COUNT(*) FROM lcm_meta").fetchone() == (0,)  # nothing recorded
    check_secret(db, SecretBox(old), db_path="x", secret_file=tmp_path / "s")
    assert db.execute("SELECT value FROM lcm_meta").fetchone() == (SecretBox(old).check_value,)


def test_the_cli_with_another_secret_is_one_line_and_writes_nothing(tmp_path, capsys):
    db_path, first, second = tmp_path / "lcm.sqlite3", tmp_path / "a.key", tmp_path / "b.key"
    first.write_bytes(Fernet.generate_key())
    second.write_bytes(Fernet.generate_key())
    base = ["--db-path", str(db_path)]
    assert (
        cli.main(["keys", "create", "one", *base, f"--LCMExtension.secret_key_file={first}"]) == 0
    )
    capsys.readouterr()
    argv = ["keys", "create", "two", *base, f"--LCMExtension.secret_key_file={second}"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another secret key" in err and "Traceback" not in err
    assert open_database(db_path).execute("SELECT name FROM proxy_keys").fetchall() == [("one",)]
