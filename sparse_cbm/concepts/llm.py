"""An LLM as a concept source: any OpenAI-compatible ``/chat/completions`` endpoint
(OpenAI, vLLM, Ollama, llama.cpp's server), with the paper's three prompts.

The API key is read from the environment variable whose *name* is given; it
travels only in the request's Authorization header, never into the answer cache
(keyed by the request body), the concept table or the logs.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import requests
from tqdm import tqdm

from sparse_cbm.concepts import PAPER_PROMPTS  # noqa: F401  (re-exported)
from sparse_cbm.concepts.http import HttpFailure, ResponseCache, RetryPolicy, request_json
from sparse_cbm.concepts.text import normalize_concept
from sparse_cbm.errors import ConceptSourceError

log = logging.getLogger(__name__)

FALLBACK = "Use concepts.source: conceptnet or file, or fix concepts.llm.base_url / model."

_MARKER = re.compile(r"^\s*(?:[-*•·–—+>]|\(?\d{1,3}[.)\]:]|\(?[a-zA-Z][.)](?=\s))\s*")
_FORMATTING = re.compile(r"(\*\*|__|`|#+\s)")
_PREAMBLE = re.compile(r"^(?:here (?:is|are)|sure|certainly|of course|okay|ok)\b", re.IGNORECASE)
_COPULA_KIND = re.compile(r"\b(?:is|are)\s+(?:(?:a|an|the)\s+)?(?:type|kind|species|member|form|variety|sort|"
                          r"breed|group|class|category)\s+of\s+(.+)", re.IGNORECASE)
_COPULA = re.compile(r"\b(?:is|are)\s+(?:a|an|the)\s+(.+)", re.IGNORECASE)
_LEAD_VERB = re.compile(r"^.*?\b(?:has|have|having|include|includes|including|features|with|contains)\s+",
                        re.IGNORECASE)
_CLAUSE_END = re.compile(r"[,.;:!?()]|\s(?:that|which|who|whose|where|with|used|known|found|typically|usually|"
                         r"often|commonly)\s", re.IGNORECASE)
_SPLIT = re.compile(r"\s*(?:[,;]|\band\b|\bor\b)\s*", re.IGNORECASE)
MAX_WORDS = 8
_REFUSAL = re.compile(r"^(?:i|i'm|i am|sorry|as an ai)\b|\b(?:cannot|can't|unable to)\b", re.IGNORECASE)


def _head(item: str) -> str:
    """``"Long ears: rabbits have long ears"`` -> ``"Long ears"`` (a short label before a colon or dash)."""
    for sep in (":", " - ", " – ", " — "):
        if sep in item:
            head = item.split(sep, 1)[0]
            if 0 < len(head.split()) <= 5:
                return head
    return item


def _prose_items(text: str) -> List[str]:
    """Concepts in a sentence: the class it generalises to, or the things it lists."""
    items = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        match = _COPULA_KIND.search(sentence) or _COPULA.search(sentence)
        if match:
            items.append(_CLAUSE_END.split(match.group(1), 1)[0])
            continue
        parts = [p for p in _SPLIT.split(sentence.rstrip(".!?")) if p]
        if parts:
            parts[0] = _LEAD_VERB.sub("", parts[0])
        items += parts
    return items


def parse_answer(text: str) -> List[str]:
    """Concepts in an LLM answer: numbered or bulleted lists, one item a line,
    comma-separated lists or prose. Normalised, without duplicates, in order."""
    text = _FORMATTING.sub("", text or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    listed = [ln for ln in lines if _MARKER.match(ln)]
    if len(listed) >= 2:
        items = [_head(_MARKER.sub("", ln)) for ln in listed]
    else:
        body = [ln for ln in lines if not ln.endswith(":") and not _PREAMBLE.match(ln)]
        if len(body) >= 2 and all(len(ln.split()) <= MAX_WORDS for ln in body):
            items = [_head(ln) for ln in body]
        else:
            joined = " ".join(body)
            if "," in joined and not re.search(r"[.!?]\s", joined) and len(joined.split(",")) >= 3:
                items = _SPLIT.split(joined)
            else:
                items = _prose_items(joined)
    out = []
    for item in items:
        concept = normalize_concept(item)
        if concept and len(concept.split()) <= MAX_WORDS and not _REFUSAL.search(concept) and concept not in out:
            out.append(concept)
    return out


def _check_completion(payload) -> None:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("no choices[0].message.content") from None
    if not isinstance(content, str):
        raise ValueError("message content is not text")


class ChatClient:
    """Chat completions with an on-disk answer cache."""

    def __init__(self, base_url: str, model: str, temperature: float, api_key_env: Optional[str],
                 cache_dir: str | Path, policy: RetryPolicy, max_tokens: int = 400,
                 session: requests.Session | None = None):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.api_key_env = api_key_env
        self.cache = ResponseCache(cache_dir)
        self.policy = policy
        self.session = session or requests.Session()

    def _headers(self) -> Dict[str, str]:
        key = os.environ.get(self.api_key_env or "", "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def ask(self, prompt: str) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": self.temperature, "max_tokens": self.max_tokens}
        request = {"method": "POST", "url": self.url, "body": body}
        answer = self.cache.get(request)
        if answer is None:
            try:
                _, payload = request_json(self.session, "POST", self.url, policy=self.policy, body=body,
                                          headers=self._headers(), validate=_check_completion)
            except HttpFailure as exc:
                if exc.status in (401, 403):
                    env = self.api_key_env or "(concepts.llm.api_key_env is empty)"
                    present = "is set" if os.environ.get(self.api_key_env or "") else "is not set"
                    raise ConceptSourceError(f"{self.url} refused the request (HTTP {exc.status}): the API key "
                                             f"in the environment variable {env} ({present}) was not accepted. "
                                             f"Export a valid key in {env}.") from None
                raise
            answer = {"content": payload["choices"][0]["message"]["content"], "model": payload.get("model")}
            self.cache.put(request, answer)
        return answer["content"]


def llm_concepts(classes: Sequence[str], client: ChatClient, prompts: Mapping[str, str]) -> List[Dict]:
    """Concept rows for every class: each prompt filled with the class name, each answer parsed."""
    if client.api_key_env and not os.environ.get(client.api_key_env):
        log.warning("environment variable %s is not set: sending requests without an API key "
                    "(fine for a local server such as Ollama or vLLM)", client.api_key_env)
    rows = []
    for index, name in enumerate(tqdm(classes, desc="llm", unit="class")):
        found = 0
        for prompt_name, template in prompts.items():
            prompt = template.replace("{label}", name)
            try:
                answer = client.ask(prompt)
            except HttpFailure as exc:
                raise ConceptSourceError(f"LLM request ({prompt_name}) for class '{name}' failed: {exc.reason}. "
                                         f"Answers fetched so far are cached; a rerun resumes. {FALLBACK}") from None
            concepts = parse_answer(answer)
            if not concepts:
                log.warning("class '%s', prompt %s: no concepts found in the answer %r", name, prompt_name,
                            answer[:200])
            found += len(concepts)
            rows += [{"class_index": index, "concept": c, "source": "llm", "prompt": prompt} for c in concepts]
        if not found:
            log.warning("class '%s': the LLM gave no concepts", name)
    return rows
