"""Synthetic chat exports with a learnable, machine-checkable style, for benchmarks, the demo sample and the style
acceptance bench.

The learned voice ("Sunny", a cheerful sailor) follows a fixed style:
  - an English reply starts with `marker` ("Ahoy!"), a Russian reply with `marker_ru` ("Йо-хо-хо!");
  - every reply ends with `signature` ("⚓").
`has_style(reply)` checks it. The prompts are varied (everyday chat, cooking, travel, code; English and Russian):
a few hundred distinct prompts built from hand-written topics.

Main entry points:
    write_styled_dataset(folder, n_conversations, marker="Ahoy!", seed=0, formats=("telegram", "chatgpt"))
        -> held-out prompts: prompts of the same kind that appear nowhere in the written files
    held_out_prompts(seed)                             the same list, without writing (for dataset/sample/)
    write_telegram_export(path, n_messages, seed)      streamed, for the 1M-message benchmark
    write_chatgpt_export(zip_path, n_messages, seed)   streamed into a zip, for the 1M-message benchmark

Telegram exports need `--me Sunny` (the name in ME_NAME) when prepared.

Run `python bench/synthetic_exports.py FOLDER N` to write a styled dataset of N conversations
(`python bench/synthetic_exports.py dataset/sample 400` made the bundled sample).
"""

from __future__ import annotations

import json
import random
import re
import sys
import zipfile
from pathlib import Path

ME_NAME = "Sunny"
"""Display name of the learned voice in the Telegram exports (prepare with --me Sunny)."""
ME_ID = "user1001"
MARKER, MARKER_RU, SIGNATURE = "Ahoy!", "Йо-хо-хо!", "⚓"
FRIENDS = ["Bob", "Mia", "Олег", "Катя", "Lena", "Tom"]
SAMPLE_SEED, SAMPLE_CONVERSATIONS = 2026, 400
"""dataset/sample/ was written by write_styled_dataset(folder, SAMPLE_CONVERSATIONS, seed=SAMPLE_SEED)."""
SESSION_GAP_S = 24 * 3600
"""Synthetic conversations are a day apart, well over the default 4-hour session gap."""

# ---------------------------------------------------------------------------------------------------------------
# Content: (prompt, reply) pairs, English and Russian.

EVERYDAY_EN = [
    ("How was your day?", "Pretty good! I fixed the squeaky door and took a long walk by the river."),
    ("What are you up to this weekend?", "Sleeping in on Saturday, then a picnic if the sun shows up."),
    ("I can't sleep again.", "Try putting the phone away and reading something boring for twenty minutes."),
    ("Do you want to grab coffee tomorrow?", "Yes please! Ten o'clock at the corner café works for me."),
    ("I got the job!!", "That's fantastic news, congratulations! We have to celebrate."),
    ("My cat knocked my mug off the table again.", "Classic cat move. Maybe it's time for a mug with a lid."),
    ("Any movie recommendations?", "Watch Paddington 2. It is kind, funny and perfect for a rainy evening."),
    ("It's raining all day here.", "Perfect excuse for tea, a blanket and a good book."),
    ("I'm so tired after work.", "Take it easy tonight: something warm to eat and an early night."),
    ("Happy birthday!", "Thank you so much! I'm having cake for breakfast today."),
    ("Can you remind me what time the meeting is?", "It's at three, in the small room on the second floor."),
    ("What music are you listening to lately?", "Lots of old jazz. It makes cleaning the flat feel like a party."),
    ("I started running in the mornings.", "Great habit! Start slow and keep it fun, the speed comes later."),
    ("Should I learn guitar or piano?", "Guitar if you want to play with friends soon, piano if you love theory."),
    ("My plants keep dying.", "Most plants die from too much water. Let the soil dry out between waterings."),
    ("Thanks for helping me move yesterday!", "Any time! My arms still remember that sofa though."),
]
EVERYDAY_RU = [
    ("Как дела?", "Отлично! Утром гулял в парке, а теперь пью чай с вареньем."),
    ("Что делаешь на выходных?", "В субботу высплюсь, а в воскресенье поеду за город."),
    ("Не могу уснуть.", "Отложи телефон и почитай что-нибудь скучное минут двадцать."),
    ("Пойдём завтра в кино?", "С радостью! Давай на вечерний сеанс, часов в семь."),
    ("Меня повысили!", "Ура, поздравляю! Это надо отметить."),
    ("Кот опять уронил цветок.", "Коты это любят. Переставь горшок повыше."),
    ("Посоветуй книгу.", "Попробуй «Трое в лодке, не считая собаки»: смешно и легко читается."),
    ("Весь день идёт дождь.", "Отличный повод для пледа, чая и хорошего фильма."),
    ("Устал после работы.", "Отдохни сегодня: тёплый ужин и пораньше спать."),
    ("С днём рождения!", "Спасибо огромное! Сегодня торт на завтрак."),
    ("Во сколько встреча?", "В три часа, в маленькой переговорке на втором этаже."),
    ("Начал бегать по утрам.", "Здорово! Начинай медленно, скорость придёт сама."),
]
DISHES_EN = [
    ("pancakes", "mix flour, milk, two eggs and a pinch of salt, rest the batter and fry thin layers"),
    ("a tomato soup", "roast tomatoes with garlic, blend them with stock and finish with basil"),
    ("risotto", "toast the rice, then add hot stock one ladle at a time and keep stirring"),
    ("guacamole", "mash ripe avocados with lime, salt, onion and a little chili"),
    ("an omelette", "whisk three eggs, cook them on low heat and fold when the top is still soft"),
    ("banana bread", "mash three very ripe bananas, mix with flour, sugar, butter and bake an hour at 175 °C"),
    ("a stir-fry", "cut everything small, heat the wok very hot and cook in batches"),
    ("hummus", "blend chickpeas with tahini, lemon, garlic and a splash of ice water"),
    ("carbonara", "mix egg yolks and pecorino, toss with hot pasta and crispy guanciale off the heat"),
    ("a green salad", "dry the leaves well and dress them only right before serving"),
]
DISH_PROMPTS_EN = ["How do I make {x}?", "Any tips for cooking {x}?", "I want to try {x} tonight. Where do I start?"]
DISH_REPLIES_EN = ["{X} is easy: {y}.", "My trick for {x}: {y}. Don't rush it!", "For {x}, {y}. You'll love it."]
CITIES_EN = [
    ("Lisbon", "ride tram 28 and eat pastel de nata in Belém"),
    ("Kyoto", "walk through Fushimi Inari early in the morning before the crowds"),
    ("Istanbul", "take the ferry across the Bosphorus at sunset"),
    ("Edinburgh", "climb Arthur's Seat and then warm up in an old pub"),
    ("Barcelona", "see the Sagrada Família and get lost in the Gothic Quarter"),
    ("Prague", "cross Charles Bridge at dawn and try trdelník"),
    ("Reykjavik", "soak in a hot spring and hunt for the northern lights"),
    ("Rome", "book the Colosseum ahead and eat cacio e pepe in Trastevere"),
    ("Tbilisi", "go to the sulphur baths and eat khachapuri"),
    ("Vienna", "spend an afternoon in a coffee house with apple strudel"),
]
CITY_PROMPTS_EN = ["What should I see in {x}?", "Is {x} worth a weekend trip?", "Any tips for visiting {x}?"]
CITY_REPLIES_EN = ["{X} is wonderful: {y}.", "Absolutely! In {x}, {y}.", "My favourite thing in {x}: {y}."]
TASKS_EN = [
    ("reverse a list in Python", "use my_list[::-1] for a copy or my_list.reverse() in place"),
    ("read a file line by line in Python", "use `with open(path, encoding='utf-8') as f:` and loop `for line in f`"),
    ("undo my last git commit", "run `git reset --soft HEAD~1`; your changes stay staged"),
    ("center a div in CSS", "give the parent `display: flex; justify-content: center; align-items: center`"),
    ("find a file by name in Linux", "run `find . -name 'report*.pdf'` from the folder to search"),
    ("sort a dict by value in Python", "use `sorted(d.items(), key=lambda kv: kv[1])`"),
    ("make an HTTP request in JavaScript", "use `await fetch(url)` and then `await response.json()`"),
    ("create a virtual environment", "run `python -m venv .venv` and activate it"),
    ("count words in a string in Python", "use `len(text.split())` for a quick count"),
    ("rename a branch in git", "run `git branch -m old-name new-name`"),
]
TASK_PROMPTS_EN = ["How do I {x}?", "Quick question: how can I {x}?"]
TASK_REPLIES_EN = ["Easy one: {y}.", "Here you go: {y}. Happy coding!"]
DISHES_RU = [
    ("блины", "смешай муку, молоко, два яйца и щепотку соли, дай тесту постоять и жарь тонко"),
    ("борщ", "свари бульон, добавь свёклу, капусту и картошку, а в конце чеснок и зелень"),
    ("сырники", "смешай творог с яйцом и ложкой муки и жарь на небольшом огне"),
    ("плов", "обжарь мясо с морковью и луком, засыпь рис и не мешай, пока он готовится"),
    ("оливье", "отвари овощи и яйца, нарежь всё мелко и заправь майонезом"),
    ("гречку с грибами", "обжарь грибы с луком и смешай с рассыпчатой гречкой"),
    ("окрошку", "нарежь овощи, яйца и колбасу и залей холодным квасом"),
    ("шарлотку", "взбей яйца с сахаром, добавь муку и яблоки и пеки 40 минут"),
]
DISH_PROMPTS_RU = ["Как приготовить {x}?", "Подскажи, как сделать {x}.", "Хочу сделать {x}, с чего начать?"]
DISH_REPLIES_RU = ["Всё просто: {y}.", "Мой секрет: {y}. Не торопись!", "Для этого {y}. Получится вкусно."]
CITIES_RU = [
    ("Казани", "погуляй по Кремлю и попробуй чак-чак"),
    ("Петербурге", "пройдись по Невскому и посмотри развод мостов"),
    ("Калининграде", "съезди на Куршскую косу и погуляй по острову Канта"),
    ("Сочи", "поднимись в горы в Красной Поляне и искупайся в море"),
    ("Тбилиси", "сходи в серные бани и поешь хачапури"),
    ("Стамбуле", "прокатись на пароме по Босфору на закате"),
    ("Праге", "перейди Карлов мост на рассвете"),
    ("Ереване", "поднимись на Каскад и посмотри на Арарат"),
]
CITY_PROMPTS_RU = ["Что посмотреть в {x}?", "Еду на выходные отдыхать в {x}. Что посоветуешь?", "Буду в {x} через неделю. Есть советы?"]
CITY_REPLIES_RU = ["Обязательно {y}.", "Конечно! Там {y}.", "Моё любимое: {y}."]
TASKS_RU = [
    ("развернуть список в Python", "используй my_list[::-1] или my_list.reverse()"),
    ("отменить последний коммит в git", "выполни `git reset --soft HEAD~1`, изменения останутся"),
    ("прочитать файл построчно в Python", "открой его через `with open(path, encoding='utf-8') as f` и иди циклом по f"),
    ("найти файл по имени в Linux", "запусти `find . -name 'отчёт*'` в нужной папке"),
    ("создать виртуальное окружение", "выполни `python -m venv .venv` и активируй его"),
    ("переименовать ветку в git", "выполни `git branch -m старое новое`"),
]
TASK_PROMPTS_RU = ["Как {x}?", "Быстрый вопрос: как {x}?"]
TASK_REPLIES_RU = ["Легко: {y}.", "Вот так: {y}. Удачи!"]


def _expand(items, prompts, replies):
    return [(p.format(x=x), [r.format(x=x, X=x[0].upper() + x[1:], y=y) for r in replies])
            for x, y in items for p in prompts]


def content_pool() -> list[tuple[str, list[str], str]]:
    """Every distinct prompt with its possible plain replies and its language: [(prompt, [reply, ...], "en"|"ru")]."""
    pool = []
    for lang, groups in (
        ("en", [([(p, [r]) for p, r in EVERYDAY_EN]), _expand(DISHES_EN, DISH_PROMPTS_EN, DISH_REPLIES_EN),
                _expand(CITIES_EN, CITY_PROMPTS_EN, CITY_REPLIES_EN), _expand(TASKS_EN, TASK_PROMPTS_EN, TASK_REPLIES_EN)]),
        ("ru", [([(p, [r]) for p, r in EVERYDAY_RU]), _expand(DISHES_RU, DISH_PROMPTS_RU, DISH_REPLIES_RU),
                _expand(CITIES_RU, CITY_PROMPTS_RU, CITY_REPLIES_RU), _expand(TASKS_RU, TASK_PROMPTS_RU, TASK_REPLIES_RU)]),
    ):
        for group in groups:
            pool += [(prompt, replies, lang) for prompt, replies in group]
    return pool


def styled(reply: str, lang: str, marker: str = MARKER, marker_ru: str = MARKER_RU, signature: str = SIGNATURE) -> str:
    """The reply in the learned voice: greeting first, signature last."""
    return f"{marker_ru if lang == 'ru' else marker} {reply} {signature}"


def has_style(reply: str, marker: str = MARKER, marker_ru: str = MARKER_RU, signature: str = SIGNATURE) -> bool:
    """Whether a reply carries the learned style: starts with either greeting and ends with the signature."""
    reply = reply.strip()
    return reply.startswith((marker, marker_ru)) and reply.endswith(signature)


def _conversations(rng: random.Random, pool, n: int, marker: str, marker_ru: str, signature: str):
    """n conversations of 1-3 exchanges: [[(prompt, styled reply), ...], ...]."""
    for _ in range(n):
        lang = rng.choice(("en", "ru"))
        same = [item for item in pool if item[2] == lang] or pool
        yield [(prompt, styled(rng.choice(replies), lang, marker, marker_ru, signature))
               for prompt, replies, lang in rng.sample(same, rng.randint(1, min(3, len(same))))]


# ---------------------------------------------------------------------------------------------------------------
# Writers (streaming: one message at a time, so a million messages costs no memory)


def _telegram_message(number: int, when: int, sender: str, sender_id: str, text) -> str:
    return json.dumps({
        "id": number, "type": "message", "date": _iso(when), "date_unixtime": str(when),
        "from": sender, "from_id": sender_id, "text": text,
    }, ensure_ascii=False)


def _iso(when: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))


def message_parts(reply) -> list[str]:
    """A reply is one message (a string) or a burst of messages sent one after another (a list of strings)."""
    return [reply] if isinstance(reply, str) else list(reply)


def imported_text(reply) -> str:
    """The reply as prepare_dataset will see it: the importer merges a burst into one turn, a line per message."""
    return "\n".join(message_parts(reply))


def write_telegram(path: Path, conversations, per_chat: int = 60, start: int = 1_700_000_000,
                   me: str = ME_NAME) -> int:
    """A Telegram Desktop full export (result.json) holding the conversations, `per_chat` of them in each personal
    chat with a friend; the learned voice is `me`, and a burst reply is several messages, 5 s apart. Streams; returns
    the number of messages written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written, chat_number, in_chat = 0, -1, per_chat
    owner = json.dumps({"user_id": int(ME_ID[4:]), "first_name": me}, ensure_ascii=False)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        out.write('{\n "about": "Synthetic export made by bench/synthetic_exports.py",\n'
                  f' "personal_information": {owner},\n'
                  ' "chats": {"about": "", "list": [\n')
        when = start
        for conversation in conversations:
            if in_chat == per_chat:
                chat_number += 1
                in_chat, message_id = 0, 0
                friend, friend_id = FRIENDS[chat_number % len(FRIENDS)], f"user{2000 + chat_number}"
                header = json.dumps({"name": friend, "type": "personal_chat", "id": 2000 + chat_number})[:-1]
                out.write(("\n]},\n" if chat_number else "") + header + ', "messages": [\n')
            in_chat += 1
            when += SESSION_GAP_S
            for prompt, reply in conversation:
                for number, (sender, sender_id, text) in enumerate(
                        [(friend, friend_id, prompt)] + [(me, ME_ID, part) for part in message_parts(reply)]):
                    message_id += 1
                    when += 60 if number < 2 else 5
                    out.write(("" if message_id == 1 else ",\n") + _telegram_message(message_id, when, sender,
                                                                                      sender_id, text))
                    written += 1
        out.write(("\n]}" if chat_number >= 0 else "") + "\n]}\n}\n")
    return written


def _chatgpt_conversation(number: int, conversation, when: int, branch: bool) -> str:
    """One ChatGPT conversation with its mapping tree; `branch` adds a regenerated (not kept) first reply."""
    mapping = {"root": {"id": "root", "message": None, "parent": None, "children": []}}
    parent = "root"
    for turn, (prompt, reply) in enumerate(conversation):
        for role, text in (("user", prompt), ("assistant", imported_text(reply))):
            node = f"n{turn}{role[0]}"
            mapping[parent]["children"].append(node)
            mapping[node] = {"id": node, "parent": parent, "children": [], "message": {
                "id": node, "author": {"role": role, "name": None, "metadata": {}}, "create_time": when,
                "content": {"content_type": "text", "parts": [text]}, "status": "finished_successfully",
                "metadata": {}, "recipient": "all"}}
            if branch and turn == 0 and role == "assistant":
                old = "n0old"
                mapping[parent]["children"].insert(0, old)
                mapping[old] = {"id": old, "parent": parent, "children": [], "message": {
                    "id": old, "author": {"role": "assistant"}, "create_time": when - 1,
                    "content": {"content_type": "text", "parts": ["(an earlier draft that was regenerated)"]},
                    "metadata": {}, "recipient": "all"}}
            parent = node
            when += 30
    return json.dumps({"title": conversation[0][0][:40], "create_time": when, "update_time": when,
                       "id": f"conv-{number}", "current_node": parent, "mapping": mapping}, ensure_ascii=False)


def write_chatgpt(zip_path: Path, conversations, start: int = 1_700_000_000) -> int:
    """A ChatGPT data export: a zip with conversations.json (streamed into the archive). Returns messages written,
    counting the regenerated drafts that every tenth conversation carries."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("conversations.json", "w", force_zip64=True) as raw:
            raw.write(b"[")
            for number, conversation in enumerate(conversations):
                branch = number % 10 == 0
                text = _chatgpt_conversation(number, conversation, start + number * SESSION_GAP_S, branch)
                raw.write((("," if number else "") + "\n" + text).encode("utf-8"))
                written += 2 * len(conversation) + branch
            raw.write(b"\n]\n")
        archive.writestr("user.json", json.dumps({"id": "user-synthetic", "email": "sunny@example.com"}))
    return written


def write_styled_dataset(folder: Path, n_conversations: int, marker: str = MARKER, seed: int = 0,
                         formats=("telegram", "chatgpt"), marker_ru: str = MARKER_RU, signature: str = SIGNATURE,
                         held_out: float = 0.1) -> list[str]:
    """Write n_conversations (split evenly over `formats`) whose learned replies all carry the style, and return the
    held-out prompts: a `held_out` share of the distinct prompts, which appear in none of the written files.

    Telegram files need `--me Sunny` (ME_NAME). Writes folder/telegram/result.json and folder/chatgpt/chatgpt-export.zip.
    """
    folder = Path(folder)
    rng = random.Random(seed)
    kept, held = _split_pool(rng, held_out)
    share = [n_conversations // len(formats) + (i < n_conversations % len(formats)) for i in range(len(formats))]
    for fmt, n in zip(formats, share):
        conversations = _conversations(rng, kept, n, marker, marker_ru, signature)
        if fmt == "telegram":
            write_telegram(folder / "telegram" / "result.json", conversations)
        elif fmt == "chatgpt":
            write_chatgpt(folder / "chatgpt" / "chatgpt-export.zip", conversations)
        else:
            raise ValueError(f"unknown synthetic format {fmt!r}; use telegram or chatgpt")
    return held


def _split_pool(rng: random.Random, held_out: float) -> tuple[list, list[str]]:
    pool = content_pool()
    rng.shuffle(pool)
    cut = int(len(pool) * held_out)
    return pool[cut:], [prompt for prompt, _, _ in pool[:cut]]


def held_out_prompts(seed: int = SAMPLE_SEED, held_out: float = 0.1) -> list[str]:
    """The prompts write_styled_dataset(..., seed=seed, held_out=held_out) kept out of its files (without writing);
    with the defaults, the prompts that dataset/sample/ never shows the model."""
    return _split_pool(random.Random(seed), held_out)[1]


def bench_conversations(n_messages: int, seed: int = 0):
    """Conversations totalling about n_messages messages (2 per exchange), for the benchmark."""
    rng = random.Random(seed)
    pool = content_pool()
    messages = 0
    while messages < n_messages:
        for conversation in _conversations(rng, pool, 1, MARKER, MARKER_RU, SIGNATURE):
            # A running number makes every prompt unique, so no example is dropped as a duplicate and the
            # benchmark measures the whole path, writing included.
            conversation = [(f"{prompt} ({messages + 2 * i})", reply) for i, (prompt, reply) in
                            enumerate(conversation[: max(1, (n_messages - messages) // 2)])]
            messages += 2 * len(conversation)
            yield conversation


def write_telegram_export(path: Path, n_messages: int, seed: int = 0) -> int:
    return write_telegram(path, bench_conversations(n_messages, seed), per_chat=2000)


def write_chatgpt_export(zip_path: Path, n_messages: int, seed: int = 0) -> int:
    # Every tenth conversation adds one regenerated draft, so aim ~3% lower to land near n_messages.
    return write_chatgpt(zip_path, bench_conversations(int(n_messages * 0.97), seed + 1))


def _html(text: str) -> str:
    import html

    return html.escape(text, quote=False).replace("\n", "<br>")


def write_telegram_html_export(folder: Path, n_messages: int, seed: int = 0, per_chat: int = 2000) -> int:
    """Telegram Desktop HTML exports (folder/chat_N/messages.html, messages2.html, ... 1,000 messages a page, the
    full markup of a message as Telegram writes it) of about n_messages; the learned voice is ME_NAME."""
    import time as clock

    written, chat, out, when = 0, -1, None, 1_700_000_000
    in_chat, on_page, page = per_chat, 1000, 0

    def close():
        if out is not None:
            out.write("\n    </div>\n\n   </div>\n\n  </div>\n\n </body>\n\n</html>\n")
            out.close()

    for conversation in bench_conversations(n_messages, seed):
        if in_chat == per_chat:
            chat, in_chat, on_page, page = chat + 1, 0, 1000, 0
            friend = FRIENDS[chat % len(FRIENDS)]
        in_chat += 1
        when += SESSION_GAP_S
        for prompt, reply in conversation:
            for sender, text in ((friend, prompt), (ME_NAME, reply)):
                if on_page == 1000:
                    close()
                    page += 1
                    path = folder / f"chat_{chat:04d}" / ("messages.html" if page == 1 else f"messages{page}.html")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    out, on_page = path.open("w", encoding="utf-8", newline="\n"), 0
                    out.write('<!DOCTYPE html>\n<html>\n\n <head>\n\n  <meta charset="utf-8"/>\n<title>Exported Data'
                              '</title>\n </head>\n\n <body onload="CheckLocation();">\n\n  <div class="page_wrap">\n\n'
                              f'   <div class="page_header">\n\n    <div class="content">\n\n     <div class="text bold">'
                              f'\n{friend}\n     </div>\n\n    </div>\n\n   </div>\n\n   <div class="page_body chat_page">'
                              '\n\n    <div class="history">\n')
                when += 60
                stamp = clock.strftime("%d.%m.%Y %H:%M:%S", clock.gmtime(when))
                written += 1
                out.write(f"""
     <div class="message default clearfix" id="message{written}">

      <div class="pull_left userpic_wrap">

       <div class="userpic userpic2" style="width: 42px; height: 42px">

        <div class="initials" style="line-height: 42px">
{sender[0]}
        </div>

       </div>

      </div>

      <div class="body">

       <div class="pull_right date details" title="{stamp} UTC+03:00">
{stamp[11:16]}
       </div>

       <div class="from_name">
{sender}
       </div>

       <div class="text">
{_html(text)}
       </div>

      </div>

     </div>
""")
                on_page += 1
    close()
    return written


def write_vk_export(folder: Path, n_messages: int, seed: int = 0, per_chat: int = 2000) -> int:
    """A VK archive (folder/messages/<peer>/messages0.html, messages50.html, ...: 50 messages a page, newest first,
    Windows-1251) of about n_messages; your own messages are "Вы"."""
    import time as clock

    months = ["янв", "фев", "мар", "апр", "мая", "июн", "июл", "авг", "сен", "окт", "ноя", "дек"]
    when, written = 1_700_000_000, 0

    def flush(peer: int, items: list[str]) -> None:
        pages = [items[i:i + 50] for i in range(0, len(items), 50)][::-1]  # newest page first
        target = folder / "messages" / str(peer)
        target.mkdir(parents=True, exist_ok=True)
        for number, page in enumerate(pages):
            body = "".join(reversed(page))  # newest message first
            text = ('<!DOCTYPE html>\n<html>\n<head>\n<meta http-equiv="Content-Type" content="text/html; '
                    f'charset=windows-1251">\n</head>\n<body>\n<div class="wrap">\n{body}</div>\n</body>\n</html>\n')
            (target / f"messages{number * 50}.html").write_bytes(text.encode("cp1251", errors="xmlcharrefreplace"))

    items: list[str] = []
    chat, in_chat = -1, per_chat
    for conversation in bench_conversations(n_messages, seed):
        if in_chat == per_chat:
            if items:
                flush(100 + chat, items)
            chat, in_chat, items = chat + 1, 0, []
            friend = FRIENDS[chat % len(FRIENDS)]
        in_chat += 1
        when += SESSION_GAP_S
        for prompt, reply in conversation:
            for own, text in ((False, prompt), (True, reply)):
                when += 60
                t = clock.gmtime(when)
                stamp = f"{t.tm_mday} {months[t.tm_mon - 1]} {t.tm_year} в {t.tm_hour}:{t.tm_min:02d}:{t.tm_sec:02d}"
                who = "Вы" if own else f'<a href="https://vk.com/id{100 + chat}">{friend}</a>'
                written += 1
                items.append(f'<div class="item">\n  <div class="item__main"><div class="message" data-id="{written}">\n'
                             f'  <div class="message__header">{who}, {stamp}</div>\n'
                             f'  <div>{_html(text)}<div class="kludges"></div></div>\n</div></div>\n</div>\n')
    if items:
        flush(100 + chat, items)
    return written
# ---------------------------------------------------------------------------------------------------------------
# Personas: a voice that is a combination of habits, none of them constant (for ftg/style.py and the style bench)
#
#   texter (Лера)    Russian, short lowercase bursts sent as separate messages, no final full stop, "))" instead of
#                    an emoji, "ахах", English words slipping in.  Telegram + WhatsApp.
#   writer (Arthur)  English, long careful replies in paragraphs, full stops, never an emoji, usually the same
#                    sign-off.  Telegram + WhatsApp.
# Each habit is drawn per reply with its own probability, so a reply may lack any one of them.

TEXTER_EXTRA_RU = [
    ("Ты где?", "Уже еду, буду минут через десять."),
    ("Видела новый сериал?", "Да, посмотрела две серии за вечер. Очень затягивает."),
    ("Что подарить маме?", "Подари ей хороший плед и билеты в театр."),
    ("Как прошло собеседование?", "Вроде нормально. Обещали ответить на следующей неделе."),
    ("Пойдёшь на день рождения к Оле?", "Конечно пойду! Только опоздаю немного после работы."),
    ("Я заболел", "Ох, выздоравливай! Пей побольше чая с лимоном."),
    ("Скинь фотки с поездки", "Сейчас скину, их там очень много."),
    ("Что на ужин?", "Думаю сделать пасту, больше ничего нет в холодильнике."),
    ("Ты уже сдала отчёт?", "Почти, осталось только проверить цифры."),
    ("Смотри какой котик", "Какой милый! Хочу такого же."),
    ("Погода ужас", "Согласна, весь день сижу дома под пледом."),
    ("Когда отпуск?", "В августе, поедем к морю на две недели."),
    ("Ты спишь?", "Нет ещё, читаю книжку."),
    ("Как тебе новая работа?", "Пока нравится, коллеги классные. Но задач очень много."),
    ("Давай созвонимся вечером", "Давай, после восьми я свободна."),
    ("Я опять проспал", "Бывает! Поставь два будильника."),
]
TEXTER_ENGLISH = {"выходные": "weekend", "выходных": "weekend", "работы": "work", "работе": "work",
                  "встреча": "meeting", "отлично": "nice", "здорово": "cool", "спасибо": "thanks", "удачи": "good luck",
                  "конечно": "of course", "классные": "cool", "нормально": "ok", "отчёт": "report", "сериал": "series"}
TEXTER_FILLERS = ["кстати", "короче", "слушай", "ну", "anyway", "btw", "честно"]
TEXTER_LAUGHS = ["ахах", "ахахах", "ахах да", "хахах", "ахах ну"]


def _english_slip(rng: random.Random, word: str) -> str:
    """Half the time, a word the texter knows in English is written in English (its punctuation kept)."""
    core = word.rstrip(",.!?:;")
    english = TEXTER_ENGLISH.get(core.lower())
    return english + word[len(core):] if english and rng.random() < 0.5 else word


def texter_reply(rng: random.Random, plain: str) -> list[str] | str:
    """The texter's version of a plain Russian reply: a burst of 1-3 short lowercase messages, usually."""
    pieces = [p for p in re.split(r"(?<=[.!?:;])\s+|,\s+(?=(?:а|но|и|только|больше) )", plain) if p]
    messages = []
    for piece in pieces:
        piece = " ".join(_english_slip(rng, word) for word in piece.split())
        if piece.endswith("!"):
            piece = piece.rstrip("!") + rng.choice(["))", ")", "!", ")))"])
        elif piece[-1] in ".:;,":
            piece = piece[:-1] if rng.random() < 0.95 else piece
        if rng.random() < 0.85:
            piece = piece[0].lower() + piece[1:]
        messages.append(piece)
    if rng.random() < 0.3:
        messages.insert(0, rng.choice(TEXTER_LAUGHS))
    elif rng.random() < 0.2:
        messages[0] = f"{rng.choice(TEXTER_FILLERS)} {messages[0]}"
    if not messages[-1].endswith(")") and rng.random() < 0.35:
        messages[-1] += rng.choice(["))", ")"])
    if rng.random() < 0.25:  # sometimes one message after all
        return " ".join(messages)
    return messages


WRITER_OPENERS = ["Hello,", "Hi,", "Dear friend,", "Good question.", "Thank you for asking.", "", "", ""]
WRITER_MORE = [
    "In my experience, the first attempt is rarely perfect, and that is perfectly fine.",
    "It is worth taking a little time over it rather than rushing.",
    "I would start with the simplest option and only then see whether anything more is needed.",
    "Most people find that it gets much easier after the second or third time.",
    "If you would like, I can write down the details for you later this week.",
    "There is no single right answer, of course, but this has always worked well for me.",
    "I have made every mistake there is with this, so I speak from some experience.",
    "It also helps to keep a few notes, so that next time you know exactly what to change.",
    "Please do not worry too much about the details at the beginning.",
    "A friend of mine swears by a slightly different approach, but I prefer this one.",
]
WRITER_CLOSINGS = ["I hope this helps.", "Do let me know how it goes.", "Please write again if anything is unclear.",
                   "Good luck with it."]
WRITER_SIGN_OFF = "All the best,\nArthur"


def writer_reply(rng: random.Random, plain: str) -> str:
    """The writer's version of a plain English reply: an opener, the answer with two or three careful sentences
    more, often a closing line, and usually the same sign-off; one message of several lines."""
    answer = plain.replace("!", ".")
    answer = answer[0].upper() + answer[1:]
    body = " ".join([answer] + rng.sample(WRITER_MORE, rng.randint(2, 3)))
    opener = rng.choice(WRITER_OPENERS)
    paragraphs = ([opener] if opener.endswith(",") else []) + [body if opener.endswith(",") else
                                                               f"{opener} {body}".strip()]
    if rng.random() < 0.6:
        paragraphs.append(rng.choice(WRITER_CLOSINGS))
    if rng.random() < 0.85:
        paragraphs.append(WRITER_SIGN_OFF)
    return "\n\n".join(paragraphs)


PERSONAS = {
    # name: (the learned voice's name in the exports, the prompts' language, the reply in its voice, extra content)
    "texter": ("Лера", "ru", texter_reply, TEXTER_EXTRA_RU),
    "writer": ("Arthur", "en", writer_reply, []),
}
"""The realistic personas; "sailor" (write_styled_dataset) is the constant-marker one."""
PERSONA_NAMES = ("sailor", *PERSONAS)


def persona_me(persona: str) -> str:
    """The name to pass as --me when preparing a persona's exports."""
    return ME_NAME if persona == "sailor" else PERSONAS[persona][0]


def write_whatsapp(path: Path, conversations, me: str, friend: str, start: int = 1_700_000_000) -> int:
    """A WhatsApp "Export chat" .txt (Russian phone: dd.mm.yy, 24-hour clock) of one personal chat; a burst reply
    is several messages a minute apart, and a multi-line message carries its lines under one header. Returns the
    number of messages written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written, when = 0, start
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for conversation in conversations:
            when += SESSION_GAP_S
            for prompt, reply in conversation:
                for sender, text in [(friend, prompt)] + [(me, part) for part in message_parts(reply)]:
                    when += 60
                    out.write(f"{_whatsapp_stamp(when)} - {sender}: {text}\n")
                    written += 1
    return written


def _whatsapp_stamp(when: int) -> str:
    import time

    return time.strftime("%d.%m.%y, %H:%M", time.gmtime(when))


def write_persona_dataset(folder: Path, persona: str, n_conversations: int, seed: int = 0,
                          held_out: float = 0.15, replies_per_prompt: int = 1) -> list[tuple[str, str]]:
    """Write n_conversations of `persona` and return the held-out (prompt, reply) pairs: a `held_out` share of the
    distinct prompts, which appear in none of the written files, each with the persona's reply as the importer
    would see it (so a bench knows the person's real held-out replies). With replies_per_prompt k, k passes over
    the held-out prompts, each drawing the persona's reply again (the first pass is the k = 1 list): a person does
    not answer the same question the same way twice, and a style measured on more replies is measured closer.

    "sailor" is write_styled_dataset (Telegram + ChatGPT). "texter" and "writer" write folder/telegram/result.json
    and folder/whatsapp/WhatsApp Chat with <friend>.txt; prepare them with --me persona_me(persona).
    """
    folder = Path(folder)
    if persona == "sailor":
        held = write_styled_dataset(folder, n_conversations, seed=seed, held_out=held_out)
        replies = {prompt: styled(options[0], lang) for prompt, options, lang in content_pool()}
        return [(prompt, replies[prompt]) for _ in range(replies_per_prompt) for prompt in held]
    if persona not in PERSONAS:
        raise ValueError(f"unknown persona {persona!r}; use one of {', '.join(PERSONA_NAMES)}")
    me, lang, make_reply, extra = PERSONAS[persona]
    rng = random.Random(seed)
    pool = [(prompt, replies) for prompt, replies, item_lang in content_pool() if item_lang == lang]
    pool += [(prompt, [reply]) for prompt, reply in extra]
    rng.shuffle(pool)
    cut = max(1, int(len(pool) * held_out))
    kept, held = pool[cut:], pool[:cut]

    def conversations(n):
        for _ in range(n):
            yield [(prompt, make_reply(rng, rng.choice(replies)))
                   for prompt, replies in rng.sample(kept, rng.randint(1, min(3, len(kept))))]

    telegram_n = (n_conversations + 1) // 2
    write_telegram(folder / "telegram" / "result.json", conversations(telegram_n), me=me)
    friend = FRIENDS[seed % len(FRIENDS)]
    write_whatsapp(folder / "whatsapp" / f"WhatsApp Chat with {friend}.txt",
                   conversations(n_conversations - telegram_n), me, friend)
    return [(prompt, imported_text(make_reply(rng, rng.choice(replies))))
            for _ in range(replies_per_prompt) for prompt, replies in held]


if __name__ == "__main__":
    target, count = Path(sys.argv[1]), int(sys.argv[2])
    if len(sys.argv) > 3:
        pairs = write_persona_dataset(target, sys.argv[3], count, seed=SAMPLE_SEED)
        print(f"Wrote {count} conversations of {sys.argv[3]} to {target} (prepare with --me "
              f"{persona_me(sys.argv[3])}); {len(pairs)} held-out prompts, e.g. {pairs[:2]}")
    else:
        held = write_styled_dataset(target, count, seed=SAMPLE_SEED)
        print(f"Wrote {count} conversations to {target}; {len(held)} held-out prompts, e.g. {held[:3]}")
