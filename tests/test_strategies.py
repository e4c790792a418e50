import pytest
import torch
from fixtures import TINY_TEXT_MODELS, make_tiny_model
from transformers import AutoModelForSequenceClassification

from hf_transfer.config import StrategyArgs, TrainArgs, UsageError
from hf_transfer.models.architectures import encoder_layers, head_module_names, lora_target_modules
from hf_transfer.models.strategies import apply_strategy, count_parameters, parameter_groups

# (architecture, head modules, LoRA targets) as transformers 5 names them.
ARCHITECTURES = [
    ("bert", ["classifier"], ["query", "value"]),
    ("distilbert", ["pre_classifier", "classifier"], ["q_lin", "v_lin"]),
    ("roberta", ["classifier"], ["query", "value"]),
    ("deberta-v2", ["pooler", "classifier"], ["query_proj", "value_proj"]),
    ("mpnet", ["classifier"], ["q", "v"]),
]


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    return {name: make_tiny_model(tmp_path_factory.mktemp(name), name) for name, *_ in TINY_TEXT_MODELS}


def load(folder):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(folder)


def trainable_names(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name, heads, targets", ARCHITECTURES)
def test_architecture_knowledge(model_folders, name, heads, targets):
    model = load(model_folders[name])
    assert head_module_names(model) == heads
    assert lora_target_modules(model) == targets
    assert len(encoder_layers(model)) == 3


@pytest.mark.parametrize("name", [a[0] for a in ARCHITECTURES])
@pytest.mark.parametrize("strategy", ["full", "feature_extraction", "partial", "lora"])
def test_strategies_train_what_they_promise(model_folders, name, strategy):
    model = apply_strategy(load(model_folders[name]), StrategyArgs(strategy=strategy, unfreeze_layers=1),
                           "SEQ_CLS")
    trainable, total = count_parameters(model)
    names = trainable_names(model)
    heads = head_module_names(model.get_base_model() if strategy == "lora" else model)
    if strategy == "full":
        assert trainable == total
    elif strategy == "feature_extraction":
        assert names and all(n.split(".")[0] in heads for n in names)
    elif strategy == "partial":
        layers = [n for n in names if n.split(".")[0] not in heads and "pooler" not in n]
        assert layers and all(".2." in n for n in layers)  # only the top one of three layers
    else:
        assert any("lora_A" in n for n in names)
        assert all("lora_" in n or "modules_to_save" in n for n in names)
        assert trainable < total / 2


def test_lora_targets_cannot_be_guessed_for_unknown_layers(model_folders):
    model = load(model_folders["bert"])
    for module in model.modules():  # rename the attention projections to something unknown
        for old, new in (("query", "wq"), ("value", "wv")):
            if hasattr(module, old) and isinstance(getattr(module, old), torch.nn.Linear):
                module.add_module(new, getattr(module, old))
                delattr(module, old)
    with pytest.raises(UsageError, match="--lora_target_modules"):
        lora_target_modules(model)


def test_a_lora_target_that_matches_no_layer_is_named_with_the_layers_there_are(model_folders):
    """peft adapts the targets that match and drops the others silently (or fails deep inside when none does)."""
    for targets in (["query", "qkv"], ["qkv"]):
        with pytest.raises(UsageError, match="--lora_target_modules qkv: no layer of the model is named so; "
                                             "its layers: .*query.*value"):
            apply_strategy(load(model_folders["bert"]), StrategyArgs(strategy="lora", lora_target_modules=targets),
                           "SEQ_CLS")
    dotted = StrategyArgs(strategy="lora", lora_target_modules=["attention.self.query"])  # a name's end matches
    assert any("lora_A" in name for name, _ in apply_strategy(load(model_folders["bert"]), dotted,
                                                               "SEQ_CLS").named_parameters())


def test_layerwise_lr_decay_scales_lower_layers(model_folders):
    model = apply_strategy(load(model_folders["bert"]), StrategyArgs(strategy="full", layerwise_lr_decay=0.5), None)
    groups = parameter_groups(model, StrategyArgs(strategy="full", layerwise_lr_decay=0.5),
                              TrainArgs(learning_rate=1e-3, weight_decay=0.1))
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["classifier.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(params["bert.encoder.layer.2.attention.self.query.weight"])] == pytest.approx(5e-4)
    assert lr_of[id(params["bert.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(1.25e-4)
    assert lr_of[id(params["bert.embeddings.word_embeddings.weight"])] == pytest.approx(6.25e-5)
    assert wd_of[id(params["bert.encoder.layer.0.attention.self.query.weight"])] == 0.1
    assert wd_of[id(params["bert.encoder.layer.0.attention.self.query.bias"])] == 0.0
    assert wd_of[id(params["bert.embeddings.LayerNorm.weight"])] == 0.0
