"""`herdwatch sql` while a sink owns the embedded store: queries go through its local endpoint."""

from __future__ import annotations

import json
import stat
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest
from storage_helpers import fleet, publish

from herdwatch.cli import main
from storage.client import connect
from storage.endpoint import QueryEndpoint
from storage.query_client import EndpointQueryClient, open_query_client, read_endpoint
from storage.schema import migrate
from storage.settings import SinkSettings
from storage.sink import Sink

pytestmark = pytest.mark.integration


def test_sql_through_the_running_sink(kafka_settings, storage_settings_factory, tmp_path, monkeypatch, capsys):
    storage = storage_settings_factory(var_dir=tmp_path / "var")
    sent = publish(kafka_settings, fleet(3, datetime(2026, 3, 1, tzinfo=UTC), minutes=3))
    client = connect(storage)
    migrate(client)
    endpoint = QueryEndpoint(client, storage).start()
    sink = Sink(client, kafka_settings, SinkSettings(batch_size=100, batch_timeout=0.2))
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        path = tmp_path / "var" / f"query-endpoint.{storage.database}.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        info = read_endpoint(storage)
        assert info is not None
        assert isinstance(open_query_client(storage), EndpointQueryClient)
        remote = EndpointQueryClient(info["url"], info["token"])
        while remote.query("SELECT count() FROM events").rows[0][0] < sent:
            assert thread.is_alive()
        monkeypatch.setenv("HERDWATCH_STORAGE_DSN", storage.resolved_dsn())
        monkeypatch.setenv("HERDWATCH_STORAGE_DATABASE", storage.database)
        monkeypatch.setenv("HERDWATCH_STORAGE_VAR_DIR", str(tmp_path / "var"))
        assert main(["sql", "--format", "json", "SELECT count() AS n FROM events"]) == 0
        assert json.loads(capsys.readouterr().out) == [{"n": sent}]
        # the token is required
        req = urllib.request.Request(f"{info['url']}/query", data=b'{"sql": "SELECT 1"}', method="POST",
                                     headers={"Authorization": "Bearer wrong"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401
        # writes are refused through the endpoint too
        assert main(["sql", "DROP TABLE events"]) == 2
    finally:
        sink.stop()
        thread.join(30)
        endpoint.stop()
    assert not path.exists()
