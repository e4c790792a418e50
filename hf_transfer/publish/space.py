"""The files of a Gradio Space that demos a pushed model: `app.py` runs `hf-transfer demo`'s page on the model
repo, `requirements.txt` installs this package with its [app] extra, and the README carries the Space's front matter
and links back to the model card."""

from importlib.metadata import version

from huggingface_hub import SpaceCard, SpaceCardData

# The Gradio the Space runs (the [app] extra's range; the version the page was tested with).
GRADIO_VERSION = "6.31.0"

APP = '''"""Try {repo_id} in the browser, with its test metrics and their intervals beside each answer.
The model and its card: https://huggingface.co/{repo_id}"""

from hf_transfer.publish.demo import Demo, build_app

demo = build_app(Demo.load("{repo_id}"))  # downloads the model; answers as `hf-transfer predict` does

if __name__ == "__main__":
    demo.launch()
'''


def space_files(repo_id: str, space_id: str, private: bool = False) -> dict[str, str]:
    """{path in the Space `space_id`: text} for a Space that demos the model in `repo_id`."""
    card_data = SpaceCardData(title=space_id.rsplit("/", 1)[-1], emoji="🔎", colorFrom="blue", colorTo="green",
                              sdk="gradio", sdk_version=GRADIO_VERSION, app_file="app.py", pinned=False,
                              models=[repo_id], short_description="A model's answers, and how far to trust them")
    body = (f"# Try {repo_id}\n\nType a text or upload a file and read the model's answer beside its test metrics, "
            "their 95 % intervals and the plots of its report. The model, its card and its full report: "
            f"[{repo_id}](https://huggingface.co/{repo_id}).\n\nMade with `hf-transfer push --space`; the same page "
            "runs locally with `hf-transfer demo` (`pip install 'hf-transfer-kit[app]'`).\n")
    if private:
        body += ("\nThe model is private: give this Space a secret `HF_TOKEN` that may read it (Settings, Variables "
                 "and secrets).\n")
    return {"app.py": APP.format(repo_id=repo_id),
            "requirements.txt": f"hf-transfer-kit[app]=={version('hf-transfer-kit')}\n",
            "README.md": str(SpaceCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}"))}
