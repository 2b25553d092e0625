"""The configuration: every key in one schema, every problem named by file, line and key."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from hub import cli, config
from hub.clock import SystemClock
from hub.errors import ConfigError
from tests.conftest import EXAMPLE, MINIMAL


def problems_of(path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.load(path)
    return info.value.problems


def check_config(path, capsys) -> tuple[int, str]:
    rc = cli.main(["check-config", "--config", str(path)])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_example_validates(capsys):
    rc, out = check_config(EXAMPLE, capsys)
    assert rc == 0, out
    assert "configuration OK" in out


def test_example_holds_every_key_of_the_schema():
    """Every key is set in the example, or shown commented out where TOML cannot say "none"."""
    text = EXAMPLE.read_text()
    doc = tomllib.loads(text)
    commented = {(t, m.group(1)) for t, m in _commented_keys(text)}
    missing = []
    for table, keys in config.SCHEMA.items():
        subs = keys.items() if table in config.NESTED_TABLES else [(None, keys)]
        for name, sub in subs:
            have = doc.get(table, {}).get(name, {}) if name else doc.get(table, {})
            label = f"{table}.{name}" if name else table
            for k, key in sub.items():
                shown_unset = key.default is None and (label, k) in commented
                if k not in have and not shown_unset:
                    missing.append(f"{label}.{k}")
    assert missing == []


def _commented_keys(text):
    table = ""
    for line in text.splitlines():
        if h := re.match(r"^\[([\w.]+)\]", line):
            table = h.group(1)
        elif m := re.match(r"^# (\w+) = ", line):
            yield table, m


def test_every_key_has_a_one_line_meaning():
    def keys():
        for table, ks in config.SCHEMA.items():
            subs = ks.items() if table in config.NESTED_TABLES else [(table, ks)]
            for name, sub in subs:
                yield from ((f"{name}.{k}", key) for k, key in sub.items())

    for name, key in keys():
        assert key.doc and "\n" not in key.doc, name


def test_timezone_defaults_to_the_systems(write_config):
    cfg = config.load(write_config(MINIMAL.replace('timezone = "Asia/Shanghai"\n', "")))
    assert config.timezone_of(cfg) is not None and cfg["hub"]["timezone"]


def test_defaults_are_filled_and_parsed(write_config):
    cfg = config.load(write_config(MINIMAL))
    assert cfg["hub"]["heartbeat_interval"] == 300.0
    assert cfg["belt"] is None and cfg["gpio"] is None
    assert cfg["server"]["url"] == ""
    assert cfg["rules"]["night_bed_exit"]["max_out_of_bed"] == 1800.0
    assert str(cfg["rules"]["night_bed_exit"]["window"]) == "21:00-07:00"


# One row per acceptance case: the text, the key and line the message must name.
BAD = [
    ("broken TOML syntax", MINIMAL + '\n[belt]\nport = "/dev/x\n', "belt.port", 8),
    ("unknown key in a table", MINIMAL + 'heartbeat_intervall = "5m"\n', "hub.heartbeat_intervall", 6),
    ("wrong type", MINIMAL + "\n[rules.hr_high]\nthreshold = \"high\"\n", "rules.hr_high.threshold", 8),
    ("bad duration", MINIMAL + '\n[rules.night_bed_exit]\nmax_out_of_bed = "30 minutes"\n',
     "rules.night_bed_exit.max_out_of_bed", 8),
    ("bad window", MINIMAL + '\n[rules.night_bed_exit]\nwindow = "21:00-25:00"\n',
     "rules.night_bed_exit.window", 8),
    ("missing hub.id", MINIMAL.replace('id = "home-test"\n', ""), "hub.id", 1),
    ("token_file does not exist", MINIMAL + '\n[server]\nurl = "https://care.example.org/api"\n'
     'token_file = "/nonexistent/token"\n', "server.token_file", 9),
    ("http:// not loopback", MINIMAL + '\n[server]\nurl = "http://care.example.org/api"\n'
     'token_file = "{token}"\n', "server.url", 8),
]


@pytest.mark.parametrize("why,text,key,line", BAD, ids=[b[0] for b in BAD])
def test_bad_config_exits_78_naming_file_line_and_key(why, text, key, line, write_config, token_file, capsys):
    path = write_config(text.replace("{token}", str(token_file)))
    rc, out = check_config(path, capsys)
    assert rc == 78
    assert re.search(rf"^{re.escape(str(path))}:{line}: {re.escape(key)}: \S", out, re.M), out
    assert "Traceback" not in out


def test_spec_example_message_for_a_bad_duration(write_config):
    path = write_config(MINIMAL + '\n[rules.night_bed_exit]\nmax_out_of_bed = "30 minutes"\n')
    assert problems_of(path) == [
        f'{path}:8: rules.night_bed_exit.max_out_of_bed: "30 minutes" is not a duration '
        '(use e.g. "30m", "90s", "1h30m", or a number of seconds)'
    ]


def test_misspelt_key_suggests_the_right_one(write_config):
    path = write_config(MINIMAL + "\n[belt]\nport = \"loop://\"\nprotocl = \"micradar\"\n")
    assert problems_of(path) == [f"{path}:9: belt.protocl: unknown key (did you mean 'protocol'?)"]


def test_unknown_table_and_unknown_rule_are_errors(write_config):
    path = write_config(MINIMAL + "\n[bellt]\nport = 1\n\n[rules.night_bed_exitt]\nenabled = true\n")
    lines = problems_of(path)
    assert any(l.startswith(f"{path}:7: bellt: unknown key") for l in lines), lines
    assert any(l.startswith(f"{path}:10: rules.night_bed_exitt: unknown key (did you mean 'night_bed_exit'?)")
               for l in lines), lines


def test_all_problems_are_reported_at_once(write_config):
    path = write_config(MINIMAL.replace('resident_id = "R-1"\n', "") + 'log_level = "loud"\n'
                        '\n[rules.hr_high]\npersist = "ten"\n')
    keys = sorted(l.split(": ")[1] for l in problems_of(path))
    assert keys == ["hub.log_level", "hub.resident_id", "rules.hr_high.persist"]


def test_world_readable_token_is_refused(write_config, token_file):
    token_file.chmod(0o644)
    path = write_config(MINIMAL + f'\n[server]\nurl = "https://care.example.org/api"\ntoken_file = "{token_file}"\n')
    [line] = problems_of(path)
    assert line.startswith(f"{path}:9: server.token_file:") and "chmod 600" in line


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/api", "http://127.9.9.9/api", "http://[::1]:80/",
                                 "http://localhost:9/api", "https://care.example.org/api"])
def test_loopback_http_and_https_are_allowed(url, write_config, token_file):
    cfg = config.load(write_config(MINIMAL + f'\n[server]\nurl = "{url}"\ntoken_file = "{token_file}"\n'))
    assert cfg["server"]["url"] == url


def test_conf_d_dropins_override_in_lexical_order(write_config):
    main = write_config(MINIMAL + '\n[rules.hr_high]\nthreshold = 120\npersist = "10m"\n')
    write_config("[rules.hr_high]\nthreshold = 125\n", "conf.d/50-site.toml")
    write_config("[rules.hr_high]\nthreshold = 130\n", "conf.d/90-technician.toml")
    cfg = config.load(main)
    assert cfg["rules"]["hr_high"]["threshold"] == 130
    assert cfg["rules"]["hr_high"]["persist"] == 600.0


def test_problem_in_a_dropin_names_the_dropin(write_config):
    main = write_config(MINIMAL)
    drop = write_config('[rules.hr_high]\n\nthreshold = -5\n', "conf.d/90-technician.toml")
    [line] = problems_of(main)
    assert line.startswith(f"{drop}:3: rules.hr_high.threshold: -5 is out of range")


def test_environment_variable_names_the_main_file(write_config, monkeypatch):
    path = write_config(MINIMAL)
    monkeypatch.setenv("CAREHUB_CONFIG", str(path))
    assert config.load()["hub"]["id"] == "home-test"


def test_missing_file_is_a_clear_problem(tmp_path):
    [line] = problems_of(tmp_path / "nope.toml")
    assert line == f"{tmp_path / 'nope.toml'}:1: (file): does not exist (give --config PATH or set CAREHUB_CONFIG)"


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400),
                                          (45, 45), (2.5, 2.5), ("1m30s", 90)])
def test_durations(text, seconds):
    from hub.configtypes import parse_duration
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["30 minutes", "", "m", "-5s", -5, True, "1d", "5s30m"])
def test_bad_durations(bad):
    from hub.configtypes import BadValue, parse_duration
    with pytest.raises(BadValue):
        parse_duration(bad)


@pytest.mark.parametrize("text,inside,outside", [
    ("21:00-07:00", [21 * 60, 23 * 60 + 59, 0, 6 * 60 + 59], [7 * 60, 12 * 60, 20 * 60 + 59]),
    ("00:00-24:00", [0, 720, 1439], []),
    ("08:00-20:00", [480, 1199], [479, 1200]),
])
def test_windows(text, inside, outside):
    from hub.configtypes import parse_window
    w = parse_window(text)
    assert all(w.contains(m) for m in inside)
    assert not any(w.contains(m) for m in outside)


def test_check_config_runs_as_a_module_without_traceback(write_config):
    path = write_config(MINIMAL + "[oops\n")
    proc = subprocess.run([sys.executable, "-m", "hub", "check-config", "--config", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 78
    assert proc.stderr.startswith(f"{path}:6: ") and "Traceback" not in proc.stderr


# --- numbers are numbers ------------------------------------------------------------------
def _numeric_keys():
    """Every key of the schema that takes a number or a duration (rules included)."""
    for table, keys in config.SCHEMA.items():
        nested = keys.items() if table in config.NESTED_TABLES else [(None, keys)]
        for sub, schema in nested:
            for name, key in schema.items():
                if any(_takes_number(key, probe) for probe in (0, 1.5, 2, 30, 1000, 10 ** 9)):
                    yield (table, sub, name)


def _takes_number(key, probe) -> bool:
    try:
        key.parse(probe)
        return True
    except Exception as e:
        return "out of range" in str(e)


NUMERIC_KEYS = sorted(_numeric_keys(), key=str)


def test_the_schema_has_numeric_keys_to_check():
    names = {".".join(p for p in k if p) for k in NUMERIC_KEYS}
    assert {"hub.heartbeat_interval", "store.quota_mb", "server.timeout"} <= names
    assert any(n.startswith("rules.") for n in names) and len(names) > 20


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_nan_and_infinity_are_rejected_by_every_numeric_key(value, write_config):
    problems = []
    for table, sub, name in NUMERIC_KEYS:
        header = f"[{table}.{sub}]" if sub else f"[{table}]"
        if table == "hub":
            text = MINIMAL + f"{name} = {value}\n"
            line = MINIMAL.count("\n") + 1
        else:
            extra = 'port = "/dev/null"\n' if table == "belt" else ""
            text = MINIMAL + f"\n{header}\n{extra}{name} = {value}\n"
            line = text.count("\n")
        path = write_config(text)
        dotted = ".".join(p for p in (table, sub, name) if p)
        try:
            config.load(path)
        except ConfigError as e:
            if not any(p.startswith(f"{path}:{line}: {dotted}: ") for p in e.problems):
                problems.append((dotted, e.problems))
        else:
            problems.append((dotted, "accepted"))
    assert not problems


def test_nan_threshold_no_longer_disables_a_rule(write_config):
    path = write_config(MINIMAL + "\n[rules.hr_high]\nthreshold = nan\n")
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert e.value.problems == [f"{path}:8: rules.hr_high.threshold: nan is not a finite number"]


# --- the token file is read one way -----------------------------------------------------------
def _server(token_file):
    return MINIMAL + f'\n[server]\nurl = "https://care.example.org/api"\ntoken_file = "{token_file}"\n'


@pytest.mark.parametrize("content,token", [
    ("s3cret\n", "s3cret"), ("\ns3cret\n", "s3cret"), ("  s3cret  \r\n\n", "s3cret"), ("s3cret", "s3cret")])
def test_check_config_and_run_read_the_same_token(content, token, write_config, tmp_path):
    from hub.app import build_uploader
    path = tmp_path / "token"
    path.write_text(content)
    path.chmod(0o600)
    cfg = config.load(write_config(_server(path)))          # check-config's reading
    uploader = build_uploader(cfg, store=None, clock=SystemClock(), on_ack=None)   # run's reading
    assert uploader._token == token


@pytest.mark.parametrize("content,why", [
    ("", "is empty"), ("\n \n", "is empty"), ("s3cret\nother\n", "more than one line"),
    ("s3 cret\n", "spaces"), ("s3cret\x00\n", "control"), ("sécret\n", "non-ASCII")])
def test_a_token_run_would_refuse_is_refused_by_check_config(content, why, write_config, tmp_path):
    from hub.app import build_uploader
    path = tmp_path / "token"
    path.write_text(content)
    path.chmod(0o600)
    cfg_path = write_config(_server(path))
    with pytest.raises(ConfigError) as e:
        config.load(cfg_path)
    [line] = e.value.problems
    assert line.startswith(f"{cfg_path}:9: server.token_file: ") and why in line
    # and run, handed the same file (it changed after check-config), says the same
    good = tmp_path / "good"
    good.write_text("ok\n")
    good.chmod(0o600)
    cfg = config.load(write_config(_server(good)))
    cfg["server"]["token_file"] = str(path)
    with pytest.raises(ConfigError) as e:
        build_uploader(cfg, store=None, clock=SystemClock(), on_ack=None)
    assert why in e.value.problems[0]


# --- [sms] and [[sms.phones]] ------------------------------------------------------------------
SMS = MINIMAL + """
[sms]
port = "/dev/carehub-modem"
when = "always"

[[sms.phones]]
number = "+8613800000000"
name = "Duty desk"
priorities = [2, 1]

[[sms.phones]]
number = "+8613900000000"
call = true
"""


def test_sms_phones_are_read_in_order_with_defaults(write_config):
    cfg = config.load(write_config(SMS))
    phones = cfg["sms"]["phones"]
    assert [p["number"] for p in phones] == ["+8613800000000", "+8613900000000"]
    assert phones[0]["priorities"] == [1, 2] and phones[1]["priorities"] == [1]
    assert (phones[0]["call"], phones[1]["call"]) == (False, True)
    assert cfg["sms"]["ack_words"] == ["OK", "1"] and cfg["sms"]["fallback_after"] == 60.0
    assert cfg["sms"]["quiet_hours"] is None


def test_no_sms_table_means_no_modem(write_config):
    assert config.load(write_config(MINIMAL))["sms"] is None


@pytest.mark.parametrize("old, new, key, line, says", [
    ('number = "+8613800000000"', 'number = "13800000000"', "sms.phones[0].number", 12, "E.164"),
    ('number = "+8613900000000"', 'number = "+86 139"', "sms.phones[1].number", 17, "E.164"),
    ("priorities = [2, 1]", "priorities = [0, 1]", "sms.phones[0].priorities", 14, "1, 2 or 3"),
    ("priorities = [2, 1]", "priorities = []", "sms.phones[0].priorities", 14, "1, 2 or 3"),
    ("call = true", "cal = true", "sms.phones[1].cal", 18, "did you mean 'call'?"),
    ('when = "always"', 'when = "sometimes"', "sms.when", 9, "always, fallback"),
    ('when = "always"', 'when = "always"\nquiet_hours = "22-07"', "sms.quiet_hours", 10, "HH:MM-HH:MM"),
    ('when = "always"', 'when = "always"\nack_words = "OK"', "sms.ack_words", 10, "list of words"),
    ('when = "always"', 'when = "always"\nmap_url = "https://x/"', "sms.map_url", 10, "{lat}"),
    ('number = "+8613900000000"', 'number = "+8613800000000"', "sms.phones[1].number", 17, "listed twice"),
])
def test_bad_sms_values_name_file_line_and_key(old, new, key, line, says, write_config):
    path = write_config(SMS.replace(old, new))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:{line}: {key}: "), problem
    assert says in problem


def test_sms_without_phones_or_port_is_refused(write_config):
    path = write_config(MINIMAL + '\n[sms]\nwhen = "always"\n')
    problems = problems_of(path)
    assert any(p.startswith(f"{path}:7: sms.port: is required") for p in problems), problems
    assert any(": sms.phones: is required" in p for p in problems), problems


def test_a_single_phones_table_is_refused_with_the_right_syntax(write_config):
    path = write_config(SMS.split("[[sms.phones]]")[0] + '[sms.phones]\nnumber = "+8613800000000"\n')
    [problem] = problems_of(path)
    assert "sms.phones: must be tables, one [[sms.phones]] each" in problem


def test_phones_in_a_dropin_replace_the_main_files(write_config):
    main = write_config(SMS)
    write_config('[[sms.phones]]\nnumber = "+8613700000000"\n', "conf.d/10-phones.toml")
    bad = write_config('[[sms.phones]]\nnumber = "x"\n', "conf.d/20-bad.toml")
    [problem] = problems_of(main)
    assert problem.startswith(f"{bad}:2: sms.phones[0].number: ")
    bad.unlink()
    assert [p["number"] for p in config.load(main)["sms"]["phones"]] == ["+8613700000000"]


def test_pin_file_is_checked_like_the_token(write_config, tmp_path):
    pin = tmp_path / "pin"
    pin.write_text("1234\n")
    pin.chmod(0o600)
    text = SMS.replace('when = "always"', f'when = "always"\npin_file = "{pin}"')
    assert config.load(write_config(text))["sms"]["pin_file"] == str(pin)
    pin.chmod(0o644)
    [problem] = problems_of(write_config(text))
    assert ":10: sms.pin_file: " in problem and "chmod 600" in problem
    pin.chmod(0o600)
    pin.write_text("12ab\n")
    [problem] = problems_of(write_config(text))
    assert "4 to 8 digits" in problem
    [problem] = problems_of(write_config(text.replace(str(pin), str(tmp_path / "nope"))))
    assert "does not exist (a file holding the SIM PIN" in problem


def test_summary_lists_the_bound_phones(write_config):
    text = config.summary(config.load(write_config(SMS)))
    assert "sms: modem on /dev/carehub-modem, when always, phones: Duty desk (P1/2), +8613900000000 (P1)" in text


# --- [watch] ---------------------------------------------------------------------------------

def test_no_watch_table_means_no_watch(write_config):
    assert config.load(write_config(MINIMAL))["watch"] is None


def test_watch_defaults_and_custom_profile(write_config):
    cfg = config.load(write_config(MINIMAL + '\n[watch]\naddress = "aa:bb:cc:dd:ee:ff"\n'
                                   'profile = "custom"\nevent_char = "0xFFA3"\nfall_pattern = "?? ?? 01"\n'))
    w = cfg["watch"]
    assert w["event_char"] == "0000ffa3-0000-1000-8000-00805f9b34fb"
    assert w["offline_grace"] == 30.0 and w["battery_interval"] == 600.0 and w["sos_dedupe"] == 2.0
    assert "watch: custom at aa:bb:cc:dd:ee:ff" in config.summary(cfg)


WATCH_BAD = [
    ("address not a MAC", '[watch]\naddress = "watch-1"\n', "watch.address", 8),
    ("address missing", '[watch]\nprofile = "itag"\n', "watch.address", 7),
    ("unknown profile", '[watch]\naddress = "AA:BB:CC:DD:EE:FF"\nprofile = "fitbit"\n', "watch.profile", 9),
    ("misspelt key", '[watch]\naddress = "AA:BB:CC:DD:EE:FF"\nofline_grace = "1m"\n', "watch.ofline_grace", 9),
    ("bad pattern", '[watch]\naddress = "AA:BB:CC:DD:EE:FF"\nsos_pattern = "0x1G"\n', "watch.sos_pattern", 9),
    ("bad uuid", '[watch]\naddress = "AA:BB:CC:DD:EE:FF"\nevent_char = "ffa"\n', "watch.event_char", 9),
    ("custom without a characteristic", '[watch]\naddress = "AA:BB:CC:DD:EE:FF"\nprofile = "custom"\n'
     'sos_pattern = "01"\n', "watch.event_char", 7),          # absent: the table's line
    ("custom without a pattern", '[watch]\naddress = "AA:BB:CC:DD:EE:FF"\nprofile = "custom"\n'
     'event_char = "ffa3"\n', "watch.sos_pattern", 7),
    ("bthome ok equals sos", '[watch]\naddress = "AA:BB:CC:DD:EE:FF"\nprofile = "bthome"\n'
     'bthome_ok = "press"\n', "watch.bthome_ok", 10),
    ("grace out of range", '[watch]\naddress = "AA:BB:CC:DD:EE:FF"\noffline_grace = "2h"\n',
     "watch.offline_grace", 9),
]


@pytest.mark.parametrize("why,text,key,line", WATCH_BAD, ids=[b[0] for b in WATCH_BAD])
def test_bad_watch_config_names_file_line_and_key(why, text, key, line, write_config, capsys):
    path = write_config(MINIMAL + "\n" + text)
    rc, out = check_config(path, capsys)
    assert rc == 78
    assert re.search(rf"^{re.escape(str(path))}:{line}: {re.escape(key)}: \S", out, re.M), out
    assert "Traceback" not in out
