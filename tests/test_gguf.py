"""GGUF judges and the grader checks before any grading: real GGUF files written
with llama.cpp's gguf-py (headers only; tests/support/gguf_files.py), a real
tokenizer without the answer words, a real tokenizer without a chat template,
and hub ids with no way to fetch them. The real GGUF model itself is loaded in
tests/test_real_model.py."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from rbrlang.errors import GraderError, PathError
from rbrlang.runtime.gguf import fingerprint, read_header

from tests.support.files import write
from tests.support.policies import MINIMAL
from tests.test_cli import GRADER_COMMANDS, one_line_error, with_grader

pytest.importorskip("gguf")
from tests.support.gguf_files import write_gguf  # noqa: E402


@pytest.fixture
def compiled(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    assert rbrc("compile", src, "-o", tmp_path / "compiled")[0] == 0
    return tmp_path / "compiled"


def test_the_header_is_read_past_the_vocabulary(tmp_path):
    header = read_header(write_gguf(tmp_path / "m.gguf", vocab=2000))
    assert (header.version, header.architecture, header.chat_template, header.tokenizer) == (3, "llama", True, "gpt2")
    assert not read_header(write_gguf(tmp_path / "n.gguf", chat_template=None)).chat_template


@pytest.mark.parametrize("command", GRADER_COMMANDS)
def test_bad_gguf_files_are_one_line_before_any_load_in_every_grader_command(tmp_path, rbrc, compiled, command):
    """Each names the file and what to do, exit 1, nothing written."""
    text = write(tmp_path / "notes.gguf", "hello, I am a text file\n")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(write_gguf(tmp_path / "whole.gguf").read_bytes()[:200])
    cases = [(text, f"{text}: cannot load grader: not a GGUF file (it starts with b'hell', not b'GGUF')"),
             (cut, f"{cut}: cannot load grader: a GGUF file cut short or damaged"),
             (write_gguf(tmp_path / "rwkv.gguf", arch="rwkv7"),
              "cannot load grader: transformers {} cannot dequantise GGUF architecture `rwkv7` (it reads "),
             (write_gguf(tmp_path / "plain.gguf", chat_template=None),
              "plain.gguf: cannot load grader: the GGUF file has no chat template (tokenizer.chat_template); pass "
              "--no-chat-template"),
             (tmp_path / "gone.gguf", "gone.gguf: cannot load grader: no such file; --grader takes a model folder "
              "(config.json, tokenizer files, weights), a GGUF file (FILE.gguf) or a hub id")]
    import transformers

    for grader, says in cases:
        code, _, err = rbrc(*with_grader(command, tmp_path, compiled, "--grader", grader))
        assert code == 1 and says.format(transformers.__version__) in one_line_error(command, err), grader
    assert not any((tmp_path / p).exists() for p in ("o.jsonl", "rep")) and not (compiled / "weights.json").exists()


def test_a_file_cut_inside_its_tensor_data_is_refused_before_the_load(tmp_path, rbrc, compiled):
    """The header is whole, so only the tensor table tells: transformers would read for tens
    of seconds and then fail with a numpy reshape error (found with SmolLM2's file cut at 60 MB)."""
    from rbrlang.runtime.gguf import check_gguf

    whole = write_gguf(tmp_path / "whole.gguf", tensors=3)
    assert check_gguf(whole).size == whole.stat().st_size  # the whole file passes
    data = whole.read_bytes()
    for keep in (len(data) - 1, len(data) - 16 * 32 * 4 - 1):
        cut = tmp_path / f"cut{keep}.gguf"
        cut.write_bytes(data[:keep])
        code, _, err = rbrc("grade", compiled, "--data", write(tmp_path / "d.jsonl", ""), "--grader", cut,
                            "-o", tmp_path / "o.jsonl")
        assert code == 1 and one_line_error("grade", err) == (
            f"rbrc grade: error: {cut}: cannot load grader: a GGUF file cut short ({keep} bytes; its tensor table needs {len(data)}); "
            "download or convert it again"), err


def test_the_gguf_fingerprint_covers_the_bytes_not_only_size_and_time(tmp_path):
    """The grade cache's identity of a GGUF file: a file rewritten in place with
    the same size and modification time (as `cp -p` or `unzip` leave one) is
    another grader; the same bytes elsewhere are the same weights."""
    path = write_gguf(tmp_path / "m.gguf")
    before = fingerprint(path)
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and fingerprint(path) != before
    copy = tmp_path / "copy.gguf"
    shutil.copy2(path, copy)
    assert fingerprint(copy) == fingerprint(path)
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert fingerprint(copy) != fingerprint(path)


def _tiny_copy(tiny_model_dir, tmp_path):
    folder = tmp_path / "grader"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def test_a_tokenizer_without_a_chat_template_is_refused_unless_plain_prompts_are_asked_for(
        tmp_path, rbrc, compiled, tiny_model_dir):
    folder = _tiny_copy(tiny_model_dir, tmp_path)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    code, _, err = rbrc(*with_grader("grade", tmp_path, compiled, "--grader", folder, "--no-cache"))
    assert code == 1 and one_line_error("grade", err).endswith(
        f"{folder}: the grader's tokenizer has no chat template; pass --no-chat-template to send the prompts as "
        "plain text (a base model), or give an instruct model that has one")
    assert not (tmp_path / "o.jsonl").exists()
    code, _, err = rbrc(*with_grader("grade", tmp_path, compiled, "--grader", folder, "--no-cache",
                                     "--no-chat-template"))
    assert code == 0, err


def test_answer_words_the_tokenizer_lacks_are_refused_before_grading(tmp_path, rbrc, compiled, tiny_model_dir):
    """A word-level vocabulary without "yes": its first token would be the unknown
    token, read as an answer for every prompt. One line naming the grader."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from rbrlang.runtime import answer_tokens

    folder = _tiny_copy(tiny_model_dir, tmp_path)
    old = AutoTokenizer.from_pretrained(folder)
    words = ["<unk>", "<s>", "</s>", "<pad>", "no", "No", "hi", "x", "Is", "a", "?", "b"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", chat_template=old.chat_template)
    with pytest.raises(GraderError, match=r"the yes spelling 'yes' is not in this tokenizer's vocabulary \(it reads "
                                          r"as the unknown token '<unk>'\)"):
        answer_tokens(fast, ("yes",), ("no",))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (folder / name).unlink(missing_ok=True)
    fast.save_pretrained(folder)
    code, _, err = rbrc(*with_grader("grade", tmp_path, compiled, "--grader", folder, "--no-cache"))
    assert code == 1 and f"{folder}: cannot grade with it: the yes spelling 'yes' is not in this tokenizer's " \
                         "vocabulary" in one_line_error("grade", err)
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("command", GRADER_COMMANDS)
def test_a_hub_id_with_no_network_and_no_cache_is_one_line_at_once(tmp_path, rbrc, compiled, command, monkeypatch):
    """Offline (HF_HUB_OFFLINE), or a hub that refuses the connection: not the
    five retries of each file and the hub's raw message."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, _, err = rbrc(*with_grader(command, tmp_path, compiled, "--grader", "someorg/some-judge"))
    assert code == 1 and one_line_error(command, err).endswith(
        "someorg/some-judge: cannot load grader: not a local folder or file; model ids need network or the HF cache "
        f"(HF_HUB_OFFLINE is set, and it is not in {tmp_path / 'hf-cache'}); --grader takes a model folder "
        "(config.json, tokenizer files, weights), a GGUF file (FILE.gguf) or a hub id")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    code, _, err = rbrc(*with_grader(command, tmp_path, compiled, "--grader", "someorg/some-judge"))
    assert code == 1 and "(http://127.0.0.1:9 cannot be reached from here, and it is not in" in \
        one_line_error(command, err)
    assert not any((tmp_path / p).exists() for p in ("o.jsonl", "rep"))


def test_a_cached_hub_id_without_network_is_read_from_the_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from rbrlang.cli.grader_args import hub_id

    snapshot = tmp_path / "hub" / "models--someorg--judge" / "snapshots" / ("0" * 40)
    write(snapshot / "config.json", "{}")
    write(tmp_path / "hub" / "models--someorg--judge" / "refs" / "main", "0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    hub_id("--grader", "someorg/judge", "grader")
    assert constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"  # no retries: straight to the cache
    with pytest.raises(PathError, match="not in"):
        hub_id("--grader", "someorg/other", "grader")
