"""Reading nginx configuration for `piagent doctor`: blocks, quotes, inheritance, times."""

from __future__ import annotations

import pytest

from piagent.cli.doctor.nginx_conf import (
    blocks_with,
    effective,
    parse,
    seconds,
    simple_directives,
    split_dump,
)

SITE = """\
# piagent site
upstream piagent { server 127.0.0.1:8000; }
server {
    listen 80;
    proxy_read_timeout 30s;  # for every location below
    location / {
        proxy_pass http://piagent;
        proxy_buffering off;
    }
    location ~ "^/(health|ready)$" {
        add_header X-Note "a { brace ; in quotes";
        set $where "${host}";
        proxy_pass http://piagent;
        proxy_read_timeout 5m;
    }
}
"""


def test_parse_nests_blocks_and_keeps_line_numbers():
    upstream, server = parse(SITE)
    assert (upstream.name, upstream.args, upstream.line) == ("upstream", ["piagent"], 2)
    assert [d.name for d in upstream.block] == ["server"]
    assert [d.name for d in server.block] == [
        "listen",
        "proxy_read_timeout",
        "location",
        "location",
    ]
    regex_location = server.block[3]
    assert (regex_location.args, regex_location.line) == (["~", "^/(health|ready)$"], 10)
    assert regex_location.block[0].args == ["X-Note", "a { brace ; in quotes"]
    assert regex_location.block[1].args == ["$where", "${host}"]


def test_effective_takes_the_innermost_setting_then_the_outer_ones():
    http_level = simple_directives(parse("proxy_buffering on; proxy_read_timeout 60s;"))
    first, second = blocks_with(parse(SITE), "proxy_pass")
    assert [block.name for block in first] == ["server", "location"]
    assert effective("proxy_buffering", first, http_level).args == ["off"]
    assert effective("proxy_buffering", second, http_level).args == ["on"]
    assert effective("proxy_read_timeout", first, http_level).args == ["30s"]
    assert effective("proxy_read_timeout", second, http_level).args == ["5m"]
    assert effective("proxy_ignore_headers", first, http_level) is None


def test_split_dump_gives_each_file_its_own_lines():
    dump = (
        "# configuration file /etc/nginx/nginx.conf:\nevents {}\nhttp { include x; }\n\n"
        "# configuration file /etc/nginx/sites-enabled/piagent:\nserver {\n}\n"
    )
    files = split_dump(dump)
    assert list(files) == ["/etc/nginx/nginx.conf", "/etc/nginx/sites-enabled/piagent"]
    assert files["/etc/nginx/sites-enabled/piagent"].startswith("server {")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("180s", 180), ("180", 180), ("3m", 180), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600)],
)
def test_seconds_reads_nginx_times(value, expected):
    assert seconds(value) == expected


@pytest.mark.parametrize("value", ["", "soon", "30x", "$timeout"])
def test_seconds_is_none_for_what_is_not_a_time(value):
    assert seconds(value) is None
