"""The fake Hub (tests/hub_server.py) against the real huggingface_hub client."""

import hashlib
import random
import subprocess
import sys

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError

REPO = "user/tiny-adapter"
TOKEN = "hf_test_token"


@pytest.fixture
def api(fake_hub):
    return HfApi(endpoint=fake_hub.url, token=TOKEN)


@pytest.fixture
def adapter_dir(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlibrary_name: peft\nlicense: mit\n---\n# Tiny adapter\n")
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8, "lora_alpha": 16}\n')
    (folder / "adapter_model.safetensors").write_bytes(random.Random(0).randbytes(100_000))
    return folder


def local_files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_create_repo_new_then_exist_ok_then_conflict(fake_hub, api):
    url = api.create_repo(REPO, exist_ok=True, private=True)
    assert url.repo_id == REPO and url.startswith(fake_hub.url)
    assert fake_hub.repos[REPO] == {"private": True, "branches": {"main": {}}}

    # Exists + exist_ok=True: the server answers 409, the client swallows it.
    again = api.create_repo(REPO, exist_ok=True, private=True)
    assert again == url
    assert list(fake_hub.repos) == [REPO]

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo(REPO)
    assert excinfo.value.response.status_code == 409

    assert api.repo_info(REPO).private is True


def test_upload_folder_sends_small_files_inline_and_weights_via_lfs(fake_hub, api, adapter_dir):
    api.create_repo(REPO, exist_ok=True, private=True)
    info = api.upload_folder(folder_path=adapter_dir, repo_id=REPO, commit_message="Add adapter", revision=None)

    # Every file arrived byte-identical, in one commit on main.
    assert fake_hub.files(REPO) == local_files(adapter_dir)
    [commit] = fake_hub.commits
    assert commit["revision"] == "main" and commit["message"] == "Add adapter"
    assert sorted(commit["paths"]) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert info.oid == commit["oid"] == api.repo_info(REPO).sha

    # The weights took the classic LFS path: batch -> PUT of exactly those bytes -> verify.
    weights_oid = hashlib.sha256((adapter_dir / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert len(fake_hub.requests_to("POST", r"^/user/tiny-adapter\.git/info/lfs/objects/batch$")) == 1
    assert [r[1] for r in fake_hub.requests_to("PUT", "")] == [f"/lfs-storage/{weights_oid}"]
    assert len(fake_hub.requests_to("POST", r"/info/lfs/objects/verify$")) == 1
    assert set(fake_hub.lfs_objects) == {weights_oid}
    # ...and not Xet.
    assert not [r for r in fake_hub.requests if "xet" in r[1]]

    # The token travelled only as "Authorization: Bearer hf_test_token" on Hub API calls: never in a URL,
    # never in another header, never to the (pre-signed) storage PUT.
    for method, path, headers in fake_hub.requests:
        assert TOKEN not in path
        assert all(TOKEN not in value for name, value in headers.items() if name != "Authorization")
        if method == "PUT":
            assert "Authorization" not in headers
        elif path != "/api/agent-harnesses":  # anonymous registry fetch huggingface_hub makes once per process
            assert headers["Authorization"] == f"Bearer {TOKEN}", (method, path)

    # Pushing the same folder again is a no-op, as on the real Hub (preupload returns the remote oids).
    api.upload_folder(folder_path=adapter_dir, repo_id=REPO, commit_message="Again")
    assert len(fake_hub.commits) == 1


def test_upload_to_branch(fake_hub, api, adapter_dir):
    api.create_repo(REPO)
    api.create_branch(REPO, branch="some-branch")

    api.upload_folder(folder_path=adapter_dir, repo_id=REPO, commit_message="On a branch", revision="some-branch")

    assert fake_hub.files(REPO, "some-branch") == local_files(adapter_dir)
    assert fake_hub.files(REPO, "main") == {}
    assert fake_hub.commits[-1]["revision"] == "some-branch"
    assert len(fake_hub.requests_to("PUT", "")) == 1

    with pytest.raises(RevisionNotFoundError):
        api.upload_folder(folder_path=adapter_dir, repo_id=REPO, commit_message="x", revision="no-such-branch")


def test_upload_with_create_pr_lands_on_a_pr_ref(fake_hub, api, adapter_dir):
    api.create_repo(REPO)
    info = api.upload_folder(folder_path=adapter_dir, repo_id=REPO, commit_message="PR", create_pr=True)
    assert info.pr_revision == "refs/pr/1"
    assert fake_hub.files(REPO, "refs/pr/1") == local_files(adapter_dir)
    assert fake_hub.files(REPO, "main") == {}


def test_commit_failure_raises(fake_hub, api, adapter_dir):
    api.create_repo(REPO)
    fake_hub.fail_with = 500

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.upload_folder(folder_path=adapter_dir, repo_id=REPO, commit_message="Boom")
    assert excinfo.value.response.status_code == 500
    assert fake_hub.commits == []
    assert fake_hub.files(REPO) == {}


def test_wrong_token_is_rejected(fake_hub):
    with pytest.raises(HfHubHTTPError) as excinfo:
        HfApi(endpoint=fake_hub.url, token="hf_wrong").create_repo(REPO)
    assert excinfo.value.response.status_code == 401
    assert fake_hub.repos == {}


def test_plain_hfapi_follows_hf_endpoint(fake_hub, adapter_dir):
    import huggingface_hub

    api = HfApi()  # no endpoint, no token: both come from the fixture's setup
    assert api.endpoint == fake_hub.url
    assert api.whoami()["name"] == "user"
    api.create_repo(REPO, private=True)
    # The module-level helpers are bound to an HfApi built at import time; the fixture re-points it too.
    huggingface_hub.upload_folder(folder_path=adapter_dir, repo_id=REPO, commit_message="via module helper")
    assert fake_hub.files(REPO) == local_files(adapter_dir)

    # A subprocess imports huggingface_hub afresh and takes HF_ENDPOINT from the environment.
    code = "from huggingface_hub import HfApi; print(HfApi().endpoint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == fake_hub.url
