"""Publishing: model cards, pushing to the Hub, merging adapters."""
