"""Policy sets and the lock: nobody below the administrator's minimum, and a reason when not."""

from __future__ import annotations

from pathlib import Path

import pytest

from runa.config import Config, Schema
from runa.errors import ConfigError
from runa.paths import Paths
from runa.policy import Action, PolicyLibrary, PolicyLocked, PolicySetError, UnknownPolicyError
from runa.policy import Weight as W
from runa.policy.sets import parse_set


def stack(tmp_path: Path, admin: str = "", user: str = "") -> tuple[Paths, Config]:
    paths = Paths.for_stack("u1", {"HOME": str(tmp_path / "home"),
                                   "RUNA_SYSCONFDIR": str(tmp_path / "etc")})
    if admin:
        (tmp_path / "etc").mkdir(parents=True, exist_ok=True)
        (tmp_path / "etc/runa.toml").write_text(admin)
    if user:
        assert paths.user_config is not None
        paths.user_config.mkdir(parents=True, exist_ok=True)
        (paths.user_config / "runa.toml").write_text(user)
    return paths, Schema().load(paths, {})


LOCKED = '[policy]\nminimum = "child-safe"\n'


def test_child_safe_locked_refuses_off_from_chat_a_persona_and_a_user_config(
        tmp_path: Path) -> None:
    paths, config = stack(tmp_path, admin=LOCKED, user='[policy]\ndefault = "off"\n')
    library = PolicyLibrary.for_stack(paths, config)
    admin_file = tmp_path / "etc/runa.toml"
    why = (f"the administrator locked the policy at 'child-safe' ({admin_file}); 'off' allows "
           "violent_crimes/light, which 'child-safe' masks")
    with pytest.raises(PolicyLocked) as chat:
        library.resolve("off", "/policy in chat")
    assert str(chat.value) == f"/policy in chat asks for 'off', but {why}"
    with pytest.raises(PolicyLocked, match="persona 'pirate' asks for 'off', but the "
                       "administrator locked"):
        library.resolve("off", "persona 'pirate'")
    with pytest.raises(PolicyLocked) as user:
        library.configured(config)
    assert str(user.value).startswith(f"policy.default in {paths.user_config}/runa.toml asks "
                                      "for 'off', but the administrator locked")
    assert library.resolve("child-safe", "/policy in chat").name == "child-safe"


def test_a_set_just_below_the_minimum_is_refused_naming_the_cell(tmp_path: Path) -> None:
    paths, config = stack(tmp_path, admin=LOCKED)
    with pytest.raises(PolicyLocked, match="'default' only flags violent_crimes/light, which "
                       "'child-safe' masks"):
        PolicyLibrary.for_stack(paths, config).resolve("default", "/policy in chat")


def test_without_a_lock_every_set_may_be_chosen(tmp_path: Path) -> None:
    paths, config = stack(tmp_path)
    library = PolicyLibrary.for_stack(paths, config)
    assert library.names() == ["child-safe", "default", "off", "research"]
    assert library.resolve("off", "/policy in chat").passes_everything
    assert library.configured(config).name == "default"
    assert library.below_lock("off") is None


def test_a_user_file_setting_the_minimum_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        stack(tmp_path, user='[policy]\nminimum = "off"\n')
    assert caught.value.source.endswith("home/.config/runa/runa.toml")
    assert caught.value.key == "policy.minimum"
    assert "only the administrator may set this" in str(caught.value)


def test_the_environment_cannot_lower_the_lock_either(tmp_path: Path) -> None:
    paths, _ = stack(tmp_path, admin=LOCKED)
    with pytest.raises(ConfigError, match=r"^environment: policy\.minimum"):
        Schema().load(paths, {"RUNA_POLICY_MINIMUM": ""})


def test_an_unknown_set_lists_the_known_ones(tmp_path: Path) -> None:
    paths, config = stack(tmp_path)
    with pytest.raises(UnknownPolicyError, match="unknown policy set 'strict'; known sets: "
                       "child-safe, default, off, research") as caught:
        PolicyLibrary.for_stack(paths, config).resolve("strict", "/policy in chat")
    assert caught.value.exit_code == 66


def test_an_admin_set_replaces_the_packaged_one_and_a_user_adds_one(tmp_path: Path) -> None:
    paths, config = stack(tmp_path)
    (tmp_path / "etc/policy/sets").mkdir(parents=True)
    (tmp_path / "etc/policy/sets/default.yaml").write_text(
        "description: site default\nrefusal: sorry\nactions:\n  default: block\n")
    assert paths.user_config is not None
    (paths.user_config / "policy/sets").mkdir(parents=True)
    (paths.user_config / "policy/sets/mine.yaml").write_text(
        "description: mine\nrefusal: sorry\nactions:\n  default: {light: allow, medium: flag, "
        "heavy: mask}\n  hate: {heavy: block}\n")
    library = PolicyLibrary.for_stack(paths, config)
    assert library.get("default").description == "site default"
    mine = library.get("mine")
    assert mine.action("hate", W.HEAVY) is Action.BLOCK
    assert mine.action("hate", W.MEDIUM) is Action.FLAG  # the default row fills the rest


def test_the_packaged_sets_read_as_documented() -> None:
    from runa.policy.files import PACKAGED

    sets = {p.stem: parse_set(p) for p in (PACKAGED / "sets").glob("*.yaml")}
    assert sets["child-safe"].fail == "closed" and sets["default"].fail == "open"
    assert sets["off"].passes_everything
    assert sets["default"].action("suicide_self_harm", W.HEAVY) is Action.WHISPER
    note = sets["default"].whisper("suicide_self_harm")
    assert "emergency services" in note and "crisis line" in note


@pytest.mark.parametrize(("text", "line", "field"), [
    ("description: x\nrefusal: sorry\nactions:\n  hate: block\n", 4, "actions.default"),
    ("description: x\nrefusal: sorry\nactions:\n  default: stop\n", 4, "actions.default"),
    ("description: x\nrefusal: sorry\nfail: maybe\nactions:\n  default: block\n", 3, "fail"),
    ("description: x\nrefusal: sorry\nactions:\n  default: block\n  gossip: block\n", 5,
     "actions"),
])
def test_a_malformed_set_names_the_file_line_and_field(tmp_path: Path, text: str, line: int,
                                                       field: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(PolicySetError) as caught:
        parse_set(path)
    assert (caught.value.line, caught.value.field) == (line, field)


def test_yaml_reading_a_bare_no_as_false_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("description: x\nrefusal: no\nactions:\n  default: block\n")
    with pytest.raises(PolicySetError, match="field 'refusal': 'no' reads as false in YAML: "
                       "put the text in quotes"):
        parse_set(path)


def test_tier1_is_compiled_once_until_the_matrix_changes(tmp_path: Path) -> None:
    import os

    from .streams import WordTokenizer

    paths, config = stack(tmp_path)
    library = PolicyLibrary.for_stack(paths, config)
    tok = WordTokenizer()
    policy = library.get("default")
    first = library.tier1(policy, tok)
    assert library.tier1(policy, tok) is first
    mine = tmp_path / "etc/policy/matrix.d/site.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("- id: site\n  category: hate\n  weight: heavy\n  phrase: site word\n")
    os.utime(mine, ns=(2, 2))
    again = library.tier1(policy, tok)
    assert again is not first and again.check("a site word").rules == ("site",)


def test_a_user_set_named_like_the_minimum_cannot_undo_the_lock(tmp_path: Path) -> None:
    paths, config = stack(tmp_path, admin=LOCKED)
    assert paths.user_config is not None
    sets = paths.user_config / "policy/sets"
    sets.mkdir(parents=True)
    (sets / "child-safe.yaml").write_text(
        "description: mine\nrefusal: sorry\nactions:\n  default: allow\n")
    library = PolicyLibrary.for_stack(paths, config)
    with pytest.raises(PolicyLocked):
        library.resolve("off", "/policy in chat")
    assert library.get("child-safe").action("violent_crimes", W.LIGHT) is Action.MASK
    [problem] = library.problems().values()
    assert problem.path == sets / "child-safe.yaml"
    assert "may add sets, not replace them" in str(problem)


def test_a_user_motif_reusing_a_packaged_id_is_refused_and_the_packaged_one_stays(
        tmp_path: Path) -> None:
    from .streams import WordTokenizer

    rule = "self-harm.end-my-life"  # a packaged phrase motif
    paths, config = stack(tmp_path, admin=LOCKED)
    assert paths.user_config is not None
    mine = paths.user_config / "policy/matrix.d/50-mine.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text(f"- id: my.own\n  category: hate\n  weight: light\n  phrase: my own\n"
                    f"- id: {rule}\n  category: hate\n  weight: light\n  phrase: harmless\n")
    library = PolicyLibrary.for_stack(paths, config)
    tier = library.tier1(library.get("child-safe"), WordTokenizer())
    verdict = tier.check("I want to end my life")
    assert verdict.action is not Action.ALLOW and verdict.rules == (rule,)
    assert tier.check("this is my own").rules == ("my.own",)  # adding a motif is fine
    [problem] = library.matrix().problems
    assert (problem.path, problem.line, problem.field) == (mine, 5, "id")


def test_an_admin_motif_may_replace_a_packaged_one(tmp_path: Path) -> None:
    paths, config = stack(tmp_path)
    site = tmp_path / "etc/policy/matrix.d/50-site.yaml"
    site.parent.mkdir(parents=True)
    site.write_text("- id: self-harm.end-my-life\n  category: hate\n  weight: light\n"
                    "  phrase: site phrase\n")
    motif = PolicyLibrary.for_stack(paths, config).matrix().by_id()["self-harm.end-my-life"]
    assert (motif.source, motif.pattern) == (site, "site phrase")


def test_a_broken_admin_minimum_is_reported_by_path_even_with_a_packaged_twin(
        tmp_path: Path) -> None:
    paths, config = stack(tmp_path, admin=LOCKED)
    broken = tmp_path / "etc/policy/sets/child-safe.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text("description: site\nrefusal: no\nactions: [\n")
    library = PolicyLibrary.for_stack(paths, config)
    [problem] = library.minimum_problems()
    assert problem.path == broken
    assert list(library.problems()) == [broken]
    with pytest.raises(PolicyLocked):  # the packaged child-safe still holds the floor
        library.resolve("off", "/policy in chat")


def test_a_new_compile_logs_its_unusable_motifs_once_with_file_line_and_field(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from .streams import WordTokenizer

    paths, config = stack(tmp_path)
    site = tmp_path / "etc/policy/matrix.d/site.yaml"
    site.parent.mkdir(parents=True)
    site.write_text("- id: bound\n  category: hate\n  weight: heavy\n"
                    "  tokens: {tokenizer: 'sha256:other', ids: [1, 2]}\n")
    library = PolicyLibrary.for_stack(paths, config)
    policy, tok = library.get("default"), WordTokenizer()
    with caplog.at_level("WARNING"):
        library.tier1(policy, tok)
        library.tier1(policy, tok)
    [record] = [r for r in caplog.records
                if getattr(r, "RUNA_EVENT", "") == "policy_motif_unusable"]
    fields = {key: getattr(record, key) for key in ("RUNA_FILE", "RUNA_LINE", "RUNA_FIELD")}
    assert fields == {"RUNA_FILE": str(site), "RUNA_LINE": "1",
                      "RUNA_FIELD": "tokens.tokenizer"}
