"""Named, versioned teacher prompt templates; the system prompt is shared with training and the eval tasks."""

from __future__ import annotations

from dataclasses import dataclass

from medr1_data import Medr1Error

SYSTEM_PROMPT = (
    "You are a medical expert answering a multiple-choice question. Think through the problem step by step "
    "inside <think> and </think>, then state your final answer as <answer>X</answer>, where X is the letter "
    "of the one best option."
)

# The assistant turn of a training conversation: the answer as the system prompt asks for it, and the thinking put
# before it, inline, for chat templates that have no field for it (the release's `messages_think_inline`).
ANSWER_FORMAT = "<answer>{label}</answer>"
THINK_INLINE_FORMAT = "<think>{reasoning}</think>\n{content}"


@dataclass(frozen=True)
class Template:
    """A prompt template: its name (with version), the system prompt and the user-turn layout."""

    name: str
    system: str
    user: str
    context_block: str = "Context:\n{context}\n\n"

    def messages(self, question: str, options: list[dict[str, str]], context: str | None = None) -> list[dict]:
        """Chat messages for one question."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user_turn(question, options, context)},
        ]

    def user_turn(self, question: str, options: list[dict[str, str]], context: str | None = None) -> str:
        """The user turn alone: context (if any), the stem, then one `X. text` line per option."""
        lines = "\n".join(f"{o['label']}. {o['text']}" for o in options)
        ctx = self.context_block.format(context=context) if context else ""
        return self.user.format(context=ctx, question=question.strip(), options=lines)


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            name="medr1-mcq-v1",
            system=SYSTEM_PROMPT,
            user="{context}Question: {question}\n\nOptions:\n{options}",
        ),
    )
}


def get_template(name: str) -> Template:
    """The registered template called `name`."""
    if name not in TEMPLATES:
        raise Medr1Error(f"unknown prompt template '{name}'; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
