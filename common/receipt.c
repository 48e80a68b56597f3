/* The receipt catalogue: one table of templates (message ids x locales) and the number
 * conventions of each locale. Templates name their arguments {0} to {3}, so each
 * language keeps its own word order; non-English templates use "Label: number" forms so
 * no noun has to agree with a number (Romanian "20 de puncte", Czech "5 bodů", Greek
 * "1 πόντος"). English templates are the broker's texts from before locales, unchanged. */
#include "receipt.h"

#include "errors.h"
#include "wire.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* U+00A0 NO-BREAK SPACE: a group separator a till never wraps at. */
#define NBSP "\xc2\xa0"

static const char *const CODES[RECEIPT_LOCALES] = {
    [RECEIPT_EN] = "en", [RECEIPT_RO] = "ro", [RECEIPT_CS] = "cs",
    [RECEIPT_EL] = "el", [RECEIPT_SQ] = "sq",
};

/* Number symbols from CLDR (common/main/<locale>.xml, numbers/symbols[latn] and
 * minimumGroupingDigits): en "," and "."; ro "." and ","; cs U+00A0 and ","; el "." and
 * ","; sq U+00A0 and "," and minimumGroupingDigits 2 (so 1234 stays "1234", 12 345 is
 * grouped). Minus is the ASCII hyphen-minus in all five. */
typedef struct number_symbols {
    const char *group, *decimal;
    int min_grouping_digits;
} number_symbols_t;

static const number_symbols_t NUMBERS[RECEIPT_LOCALES] = {
    [RECEIPT_EN] = {",", ".", 1}, [RECEIPT_RO] = {".", ",", 1},  [RECEIPT_CS] = {NBSP, ",", 1},
    [RECEIPT_EL] = {".", ",", 1}, [RECEIPT_SQ] = {NBSP, ",", 2},
};

/* clang-format off */
static const char *const CATALOGUE[RECEIPT_MSGS][RECEIPT_LOCALES] = {
    [MSG_EARN] = {
        [RECEIPT_EN] = "Earned {0} points{1}. Balance {2}",
        [RECEIPT_RO] = "Puncte câștigate: {0}{1}. Sold: {2}",
        [RECEIPT_CS] = "Získané body: {0}{1}. Zůstatek: {2}",
        [RECEIPT_EL] = "Νέοι πόντοι: {0}{1}. Υπόλοιπο: {2}",
        [RECEIPT_SQ] = "Pikë të fituara: {0}{1}. Gjendja: {2}"},
    [MSG_EARN_BONUS] = {
        [RECEIPT_EN] = " ({0} base + {1} bonus{2})",
        [RECEIPT_RO] = " ({0} de bază + {1} bonus{2})",
        [RECEIPT_CS] = " ({0} základ + {1} bonus{2})",
        [RECEIPT_EL] = " ({0} + {1} μπόνους{2})",
        [RECEIPT_SQ] = " ({0} bazë + {1} bonus{2})"},
    [MSG_EARN_UNCLAIMED] = {
        [RECEIPT_EN] = "Earned {0} points{1}, unclaimed until the card is enrolled",
        [RECEIPT_RO] = "Puncte câștigate: {0}{1}, nerevendicate până la înscrierea cardului",
        [RECEIPT_CS] = "Získané body: {0}{1}, nepřiřazené do registrace karty",
        [RECEIPT_EL] = "Νέοι πόντοι: {0}{1}, σε αναμονή ως την εγγραφή κάρτας",
        [RECEIPT_SQ] = "Pikë të fituara: {0}{1}, të pakërkuara deri në regjistrimin e kartës"},
    [MSG_EARN_PENDING] = {
        [RECEIPT_EN] = "Earned {0} points{1}, pending until the return period ends. Balance {2}",
        [RECEIPT_RO] = "Puncte câștigate: {0}{1}, în așteptare pe perioada de retur. Sold: {2}",
        [RECEIPT_CS] = "Získané body: {0}{1}, čekají do konce lhůty pro vrácení. Zůstatek: {2}",
        [RECEIPT_EL] = "Νέοι πόντοι σε αναμονή: {0}{1}. Υπόλοιπο: {2}",
        [RECEIPT_SQ] = "Pikë të fituara: {0}{1}, në pritje gjatë afatit të kthimit. Gjendja: {2}"},
    [MSG_BURN] = {
        [RECEIPT_EN] = "Redeemed {0} points. Balance {1}",
        [RECEIPT_RO] = "Puncte folosite: {0}. Sold: {1}",
        [RECEIPT_CS] = "Uplatněné body: {0}. Zůstatek: {1}",
        [RECEIPT_EL] = "Εξαργυρώσατε πόντους: {0}. Υπόλοιπο: {1}",
        [RECEIPT_SQ] = "Pikë të përdorura: {0}. Gjendja: {1}"},
    [MSG_BURN_PARTIAL] = {
        [RECEIPT_EN] = "Partially redeemed {0} of {1} points. Balance {2}",
        [RECEIPT_RO] = "Puncte folosite parțial: {0} din {1}. Sold: {2}",
        [RECEIPT_CS] = "Částečně uplatněné body: {0} z {1}. Zůstatek: {2}",
        [RECEIPT_EL] = "Μερική εξαργύρωση πόντων: {0} από {1}. Υπόλοιπο: {2}",
        [RECEIPT_SQ] = "Pikë të përdorura pjesërisht: {0} nga {1}. Gjendja: {2}"},
    [MSG_BALANCE] = {
        [RECEIPT_EN] = "Balance {0} points",
        [RECEIPT_RO] = "Sold puncte: {0}",
        [RECEIPT_CS] = "Zůstatek bodů: {0}",
        [RECEIPT_EL] = "Υπόλοιπο πόντων: {0}",
        [RECEIPT_SQ] = "Gjendja e pikëve: {0}"},
    [MSG_BALANCE_SPLIT] = {
        [RECEIPT_EN] = "Balance {0} points: {1} available, {2} pending",
        [RECEIPT_RO] = "Sold puncte: {0} ({1} disponibile, {2} în așteptare)",
        [RECEIPT_CS] = "Zůstatek bodů: {0} ({1} k dispozici, {2} čeká)",
        [RECEIPT_EL] = "Υπόλοιπο πόντων: {0} ({1} διαθέσιμοι, {2} σε αναμονή)",
        [RECEIPT_SQ] = "Gjendja e pikëve: {0} ({1} të disponueshme, {2} në pritje)"},
    [MSG_CARD_UNCLAIMED] = {
        [RECEIPT_EN] = "Unclaimed {0} points on card {1} (not enrolled yet)",
        [RECEIPT_RO] = "Puncte nerevendicate pe cardul {1}: {0} (card neînscris încă)",
        [RECEIPT_CS] = "Nepřiřazené body na kartě {1}: {0} (karta zatím není registrována)",
        [RECEIPT_EL] = "Πόντοι σε αναμονή στην κάρτα {1}: {0} (δεν έχει εγγραφεί ακόμη)",
        [RECEIPT_SQ] = "Pikë të pakërkuara në kartën {1}: {0} (ende e paregjistruar)"},
    [MSG_REFUND_EARN] = {
        [RECEIPT_EN] = "Refund of {0}: {1} points taken back. Balance {2}",
        [RECEIPT_RO] = "Retur {0}, puncte retrase: {1}. Sold: {2}",
        [RECEIPT_CS] = "Vratka {0}, odečtené body: {1}. Zůstatek: {2}",
        [RECEIPT_EL] = "Επιστροφή {0}, πόντοι που αφαιρέθηκαν: {1}. Υπόλοιπο: {2}",
        [RECEIPT_SQ] = "Kthim {0}, pikë të zbritura: {1}. Gjendja: {2}"},
    [MSG_REFUND_BURN] = {
        [RECEIPT_EN] = "Refund of {0}: {1} points returned. Balance {2}",
        [RECEIPT_RO] = "Retur {0}, puncte restituite: {1}. Sold: {2}",
        [RECEIPT_CS] = "Vratka {0}, vrácené body: {1}. Zůstatek: {2}",
        [RECEIPT_EL] = "Επιστροφή {0}, πόντοι που επιστράφηκαν: {1}. Υπόλοιπο: {2}",
        [RECEIPT_SQ] = "Kthim {0}, pikë të rikthyera: {1}. Gjendja: {2}"},
    [MSG_VOID_EARN] = {
        [RECEIPT_EN] = "Voided {0}: {1} points taken back. Balance {2}",
        [RECEIPT_RO] = "Anulare {0}, puncte retrase: {1}. Sold: {2}",
        [RECEIPT_CS] = "Storno {0}, odečtené body: {1}. Zůstatek: {2}",
        [RECEIPT_EL] = "Ακύρωση {0}, πόντοι που αφαιρέθηκαν: {1}. Υπόλοιπο: {2}",
        [RECEIPT_SQ] = "Anulim {0}, pikë të zbritura: {1}. Gjendja: {2}"},
    [MSG_VOID_BURN] = {
        [RECEIPT_EN] = "Voided {0}: {1} points returned. Balance {2}",
        [RECEIPT_RO] = "Anulare {0}, puncte restituite: {1}. Sold: {2}",
        [RECEIPT_CS] = "Storno {0}, vrácené body: {1}. Zůstatek: {2}",
        [RECEIPT_EL] = "Ακύρωση {0}, πόντοι που επιστράφηκαν: {1}. Υπόλοιπο: {2}",
        [RECEIPT_SQ] = "Anulim {0}, pikë të rikthyera: {1}. Gjendja: {2}"},
    [MSG_ENROLL] = {
        [RECEIPT_EN] = "Member {0} enrolled",
        [RECEIPT_RO] = "Membrul {0} a fost înscris",
        [RECEIPT_CS] = "Člen {0} byl zaregistrován",
        [RECEIPT_EL] = "Το μέλος {0} εγγράφηκε",
        [RECEIPT_SQ] = "Anëtari {0} u regjistrua"},
    [MSG_REVERSAL_AHEAD] = {
        [RECEIPT_EN] = "{0} of {1} recorded before its original: nothing to reverse; {1} will be declined if it arrives",
        [RECEIPT_RO] = "Stornarea {1} a sosit înaintea originalului; {1} va fi refuzată dacă sosește",
        [RECEIPT_CS] = "Storno {1} dorazilo před originálem; pokud {1} dorazí, bude zamítnuta",
        [RECEIPT_EL] = "Αντιλογισμός πριν από την αρχική {1}· αν έρθει, θα απορριφθεί",
        [RECEIPT_SQ] = "Anulimi i {1} erdhi para origjinalit; {1} do të refuzohet nëse mbërrin"},
    [MSG_REVERSED_SINCE] = {
        [RECEIPT_EN] = "Reversed since (voided or refunded): {0}",
        [RECEIPT_RO] = "Stornată ulterior (anulare sau retur): {0}",
        [RECEIPT_CS] = "Mezitím stornováno (storno nebo vratka): {0}",
        [RECEIPT_EL] = "Αντιλογίστηκε στο μεταξύ (ακύρωση ή επιστροφή): {0}",
        [RECEIPT_SQ] = "Anuluar më pas (anulim ose kthim): {0}"},
    [MSG_DECLINED] = {
        [RECEIPT_EN] = "Declined {0}: {1}",
        [RECEIPT_RO] = "Refuzat {0}: {1}",
        [RECEIPT_CS] = "Zamítnuto {0}: {1}",
        [RECEIPT_EL] = "Απορρίφθηκε {0}: {1}",
        [RECEIPT_SQ] = "Refuzuar {0}: {1}"},
    [MSG_R_UNKNOWN_MEMBER] = {
        [RECEIPT_EN] = "unknown member {0}",
        [RECEIPT_RO] = "membru necunoscut {0}",
        [RECEIPT_CS] = "neznámý člen {0}",
        [RECEIPT_EL] = "άγνωστο μέλος {0}",
        [RECEIPT_SQ] = "anëtar i panjohur {0}"},
    [MSG_R_FROZEN] = {
        [RECEIPT_EN] = "account of member {0} is frozen",
        [RECEIPT_RO] = "contul membrului {0} este blocat",
        [RECEIPT_CS] = "účet člena {0} je zablokován",
        [RECEIPT_EL] = "ο λογαριασμός του μέλους {0} είναι δεσμευμένος",
        [RECEIPT_SQ] = "llogaria e anëtarit {0} është e bllokuar"},
    [MSG_R_INSUFFICIENT] = {
        [RECEIPT_EN] = "insufficient points (balance {0}, requested {1})",
        [RECEIPT_RO] = "puncte insuficiente (sold {0}, solicitate {1})",
        [RECEIPT_CS] = "nedostatek bodů (zůstatek {0}, požadováno {1})",
        [RECEIPT_EL] = "ανεπαρκείς πόντοι (υπόλοιπο {0}, ζητήθηκαν {1})",
        [RECEIPT_SQ] = "pikë të pamjaftueshme (gjendja {0}, të kërkuara {1})"},
    [MSG_R_INSUFFICIENT_PEND] = {
        [RECEIPT_EN] = "insufficient points (available {0}, pending {1}, requested {2})",
        [RECEIPT_RO] = "puncte insuficiente (disponibile {0}, în așteptare {1}, solicitate {2})",
        [RECEIPT_CS] = "nedostatek bodů (k dispozici {0}, čeká {1}, požadováno {2})",
        [RECEIPT_EL] = "ανεπαρκείς πόντοι (διαθέσιμοι {0}, σε αναμονή {1}, ζητήθηκαν {2})",
        [RECEIPT_SQ] = "pikë të pamjaftueshme (të disponueshme {0}, në pritje {1}, të kërkuara {2})"},
    [MSG_R_NOT_FOUND] = {
        [RECEIPT_EN] = "no approved transaction {0}",
        [RECEIPT_RO] = "nu există tranzacția aprobată {0}",
        [RECEIPT_CS] = "schválená transakce {0} neexistuje",
        [RECEIPT_EL] = "δεν υπάρχει εγκεκριμένη συναλλαγή {0}",
        [RECEIPT_SQ] = "nuk ka transaksion të miratuar {0}"},
    [MSG_R_ALREADY_REVERSED] = {
        [RECEIPT_EN] = "{0} was already reversed (ledger seq {1})",
        [RECEIPT_RO] = "{0} a fost deja stornată (nr. {1})",
        [RECEIPT_CS] = "{0} již byla stornována (č. {1})",
        [RECEIPT_EL] = "η {0} έχει ήδη αντιλογιστεί (α/α {1})",
        [RECEIPT_SQ] = "{0} është anuluar tashmë (nr. {1})"},
    [MSG_R_VOIDED] = {
        [RECEIPT_EN] = "{0} was voided",
        [RECEIPT_RO] = "{0} a fost anulată",
        [RECEIPT_CS] = "{0} byla stornována",
        [RECEIPT_EL] = "η {0} ακυρώθηκε",
        [RECEIPT_SQ] = "{0} është anuluar"},
    [MSG_R_FULLY_REFUNDED] = {
        [RECEIPT_EN] = "{0} is already fully refunded",
        [RECEIPT_RO] = "{0} a fost deja returnată integral",
        [RECEIPT_CS] = "{0} již byla plně vrácena",
        [RECEIPT_EL] = "η {0} έχει ήδη επιστραφεί πλήρως",
        [RECEIPT_SQ] = "{0} është kthyer tashmë plotësisht"},
    [MSG_R_ENROLLED] = {
        [RECEIPT_EN] = "member {0} is already enrolled",
        [RECEIPT_RO] = "membrul {0} este deja înscris",
        [RECEIPT_CS] = "člen {0} je již zaregistrován",
        [RECEIPT_EL] = "το μέλος {0} είναι ήδη εγγεγραμμένο",
        [RECEIPT_SQ] = "anëtari {0} është regjistruar tashmë"},
    [MSG_R_REFUND_MONEY] = {
        [RECEIPT_EN] = "refund of {0} {1} exceeds the {2} {3} not yet refunded",
        [RECEIPT_RO] = "returul de {0} {1} depășește suma nereturnată de {2} {3}",
        [RECEIPT_CS] = "vratka {0} {1} převyšuje dosud nevrácených {2} {3}",
        [RECEIPT_EL] = "η επιστροφή {0} {1} υπερβαίνει τα {2} {3} που απομένουν",
        [RECEIPT_SQ] = "kthimi prej {0} {1} tejkalon {2} {3} të pakthyera ende"},
    [MSG_R_REFUND_POINTS] = {
        [RECEIPT_EN] = "refund of {0} points exceeds the {1} not yet refunded",
        [RECEIPT_RO] = "punctele de returnat ({0}) depășesc cele nereturnate ({1})",
        [RECEIPT_CS] = "vracené body ({0}) převyšují dosud nevrácené ({1})",
        [RECEIPT_EL] = "οι πόντοι επιστροφής ({0}) υπερβαίνουν όσους απομένουν ({1})",
        [RECEIPT_SQ] = "pikët për kthim ({0}) tejkalojnë ato të pakthyera ({1})"},
    [MSG_R_REVERSED_BEFORE] = {
        [RECEIPT_EN] = "{0} was reversed (ledger seq {1}) before it arrived; not applied",
        [RECEIPT_RO] = "{0} a fost stornată (nr. {1}) înainte să sosească; neaplicată",
        [RECEIPT_CS] = "{0} byla stornována (č. {1}) dříve, než dorazila; neprovedeno",
        [RECEIPT_EL] = "η {0} αντιλογίστηκε (α/α {1}) πριν έρθει· δεν εφαρμόστηκε",
        [RECEIPT_SQ] = "{0} u anulua (nr. {1}) para se të mbërrinte; nuk u zbatua"},
    [MSG_R_DUPLICATE] = {
        [RECEIPT_EN] = "txn id {0} was already used for another request",
        [RECEIPT_RO] = "ID-ul {0} a fost deja folosit pentru altă cerere",
        [RECEIPT_CS] = "ID transakce {0} už bylo použito pro jiný požadavek",
        [RECEIPT_EL] = "ο κωδικός {0} χρησιμοποιήθηκε ήδη για άλλο αίτημα",
        [RECEIPT_SQ] = "ID-ja {0} është përdorur tashmë për një kërkesë tjetër"},
    [MSG_AGENT_OFFLINE] = {
        [RECEIPT_EN] = "Stored offline: {0}; it will be sent when it is back",
        [RECEIPT_RO] = "Salvat offline: {0}; va fi trimis la reconectare",
        [RECEIPT_CS] = "Uloženo offline: {0}; odešle se po obnovení spojení",
        [RECEIPT_EL] = "Αποθηκεύτηκε: {0}· θα σταλεί αργότερα",
        [RECEIPT_SQ] = "Ruajtur jashtë linje: {0}; do të dërgohet kur të rikthehet lidhja"},
    [MSG_AGENT_PENDING_CARD] = {
        [RECEIPT_EN] = "Pending: sent, but {0}; ask again with the same txn id for the outcome",
        [RECEIPT_RO] = "În așteptare: trimis, dar {0}; reîncercați cu același ID",
        [RECEIPT_CS] = "Čeká se: odesláno, ale {0}; zkuste znovu se stejným ID",
        [RECEIPT_EL] = "Στάλθηκε, αλλά {0}· ρωτήστε ξανά με το ίδιο ID",
        [RECEIPT_SQ] = "Në pritje: u dërgua, por {0}; provoni sërish me të njëjtën ID"},
    [MSG_AGENT_NOT_APPLIED] = {
        [RECEIPT_EN] = "{0}; nothing applied{1}",
        [RECEIPT_RO] = "{0}; nu s-a aplicat nimic{1}",
        [RECEIPT_CS] = "{0}; nic nebylo provedeno{1}",
        [RECEIPT_EL] = "{0}· καμία καταχώριση{1}",
        [RECEIPT_SQ] = "{0}; nuk u zbatua asgjë{1}"},
    [MSG_AGENT_CARD_ONLINE] = {
        [RECEIPT_EN] = " (card-linked earns are not taken offline)",
        [RECEIPT_RO] = " (punctele pe card nu se acordă offline)",
        [RECEIPT_CS] = " (body na kartu se offline nepřipisují)",
        [RECEIPT_EL] = " (κάρτα: όχι εκτός σύνδεσης)",
        [RECEIPT_SQ] = " (pikët me kartë nuk jepen jashtë linje)"},
    [MSG_CAUSE_UNREACHABLE] = {
        [RECEIPT_EN] = "the clearinghouse is unreachable",
        [RECEIPT_RO] = "sistemul central nu răspunde",
        [RECEIPT_CS] = "centrální systém neodpovídá",
        [RECEIPT_EL] = "χωρίς σύνδεση με το κέντρο",
        [RECEIPT_SQ] = "sistemi qendror nuk përgjigjet"},
    [MSG_CAUSE_KEY_REFUSED] = {
        [RECEIPT_EN] = "the clearinghouse refused this agent's key (ask the operator)",
        [RECEIPT_RO] = "sistemul central a refuzat cheia (anunțați operatorul)",
        [RECEIPT_CS] = "centrální systém odmítl klíč (volejte operátora)",
        [RECEIPT_EL] = "άκυρο κλειδί σταθμού",
        [RECEIPT_SQ] = "sistemi qendror refuzoi çelësin (njoftoni operatorin)"},
};

/* A generic reason per response code: what a decline says in a locale when the rules
 * have no specific template for it (English keeps the rules' detailed reasons). */
typedef struct code_reason {
    int code;
    const char *text[RECEIPT_LOCALES];
} code_reason_t;

static const code_reason_t REASONS[] = {
    {RC_UNKNOWN_PARTNER, {"unknown partner or terminal", "partener sau terminal necunoscut",
        "neznámý partner nebo terminál", "άγνωστος συνεργάτης ή τερματικό",
        "partner ose terminal i panjohur"}},
    {RC_DO_NOT_HONOUR, {"do not honour", "tranzacție neautorizată", "transakci nelze provést",
        "η συναλλαγή δεν εγκρίθηκε", "transaksioni nuk u miratua"}},
    {RC_INVALID_TRANSACTION, {"invalid transaction", "tranzacție invalidă", "neplatná transakce",
        "μη έγκυρη συναλλαγή", "transaksion i pavlefshëm"}},
    {RC_INVALID_AMOUNT, {"invalid amount", "sumă invalidă", "neplatná částka", "μη έγκυρο ποσό",
        "shumë e pavlefshme"}},
    {RC_UNKNOWN_MEMBER, {"unknown member or card", "membru sau card necunoscut",
        "neznámý člen nebo karta", "άγνωστο μέλος ή κάρτα", "anëtar ose kartë e panjohur"}},
    {RC_ORIGINAL_NOT_FOUND, {"original not found", "tranzacția originală nu a fost găsită",
        "původní transakce nenalezena", "η αρχική συναλλαγή δεν βρέθηκε",
        "transaksioni origjinal nuk u gjet"}},
    {RC_FORMAT_ERROR, {"format error", "eroare de format", "chyba formátu", "σφάλμα μορφής",
        "gabim formati"}},
    {RC_INSUFFICIENT_POINTS, {"insufficient points", "puncte insuficiente", "nedostatek bodů",
        "ανεπαρκείς πόντοι", "pikë të pamjaftueshme"}},
    {(int)COALITION__RESPONSE_CODE__RC_EXPIRED, {"expired", "expirat", "platnost vypršela", "έληξε", "ka skaduar"}},
    {RC_NOT_PERMITTED, {"not permitted", "operațiune nepermisă", "operace není povolena",
        "η ενέργεια δεν επιτρέπεται", "veprim i palejuar"}},
    {RC_EXCEEDS_LIMIT, {"exceeds amount limit", "limita a fost depășită", "překročen limit",
        "υπέρβαση ορίου", "kufiri u tejkalua"}},
    {RC_FROZEN, {"frozen account", "cont blocat", "účet je zablokován",
        "δεσμευμένος λογαριασμός", "llogari e bllokuar"}},
    {(int)COALITION__RESPONSE_CODE__RC_EXCEEDS_FREQUENCY, {"exceeds frequency limit", "prea multe tranzacții, reîncercați",
        "příliš mnoho transakcí, zkuste později", "πάρα πολλές συναλλαγές, δοκιμάστε ξανά",
        "shumë transaksione, provoni përsëri"}},
    {RC_UNAVAILABLE, {"broker unavailable", "serviciu indisponibil", "služba není dostupná",
        "η υπηρεσία δεν είναι διαθέσιμη", "shërbimi nuk është i disponueshëm"}},
    {RC_DUPLICATE_KEY, {"duplicate key with a different payload",
        "ID de tranzacție deja folosit", "ID transakce již bylo použito",
        "ο κωδικός συναλλαγής χρησιμοποιήθηκε ήδη", "ID-ja e transaksionit është përdorur"}},
    {RC_SYSTEM_ERROR, {"system error", "eroare de sistem", "systémová chyba",
        "σφάλμα συστήματος", "gabim sistemi"}},
};
/* clang-format on */

#define REASONS_COUNT (sizeof REASONS / sizeof REASONS[0])
_Static_assert(sizeof CATALOGUE / sizeof CATALOGUE[0] == RECEIPT_MSGS,
               "the catalogue has a row per message id");

int receipt_locale_parse(const char *code, receipt_locale_t *out)
{
    assert(code != NULL && out != NULL);
    if (code[0] == '\0') {
        *out = RECEIPT_EN;
        return CL_OK;
    }
    for (int i = 0; i < RECEIPT_LOCALES; i++)
        if (strcmp(code, CODES[i]) == 0) {
            *out = (receipt_locale_t)i;
            return CL_OK;
        }
    return CL_ERR_INVALID;
}

const char *receipt_locale_code(receipt_locale_t locale)
{
    assert(locale >= RECEIPT_EN && locale < RECEIPT_LOCALES);
    return CODES[locale];
}

/* Append src to buf at *o, never past size - 1 (the callers size buf for the worst). */
static void put(char *buf, size_t size, size_t *o, const char *src)
{
    size_t n = strlen(src);
    assert(*o + n < size);
    memcpy(buf + *o, src, n);
    *o += n;
}

/* The magnitude's digits grouped by three with the locale's separator, after `sign`. */
static void format_grouped(receipt_locale_t locale, const char *sign, uint64_t mag, char *buf,
                           size_t size)
{
    assert(locale >= RECEIPT_EN && locale < RECEIPT_LOCALES);
    const number_symbols_t *s = &NUMBERS[locale];
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%" PRIu64, mag);
    assert(n > 0 && n <= 20);
    bool grouped = n >= 3 + s->min_grouping_digits;
    size_t o = 0;
    put(buf, size, &o, sign);
    for (int i = 0; i < n; i++) {
        if (grouped && i > 0 && (n - i) % 3 == 0)
            put(buf, size, &o, s->group);
        assert(o + 1 < size);
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
}

void receipt_format_int(receipt_locale_t locale, int64_t value, char buf[RECEIPT_NUMBER_BYTES])
{
    uint64_t mag = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    format_grouped(locale, value < 0 ? "-" : "", mag, buf, RECEIPT_NUMBER_BYTES);
}

void receipt_format_minor(receipt_locale_t locale, int64_t minor, int exponent,
                          char buf[RECEIPT_NUMBER_BYTES])
{
    assert(exponent >= 0 && exponent <= RECEIPT_MONEY_EXPONENT_MAX);
    uint64_t mag = minor < 0 ? (uint64_t)0 - (uint64_t)minor : (uint64_t)minor;
    uint64_t scale = 1;
    for (int i = 0; i < exponent; i++)
        scale *= 10;
    format_grouped(locale, minor < 0 ? "-" : "", mag / scale, buf, RECEIPT_NUMBER_BYTES);
    if (exponent == 0)
        return;
    size_t o = strlen(buf);
    put(buf, RECEIPT_NUMBER_BYTES, &o, NUMBERS[locale].decimal);
    int n = snprintf(buf + o, RECEIPT_NUMBER_BYTES - o, "%0*" PRIu64, exponent, mag % scale);
    assert(n == exponent);
}

size_t receipt_utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t k = max;
    /* s[k] is the first byte left out: if it continues a character, leave that one out. */
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    assert(k <= max);
    return k;
}

/* The length of the UTF-8 sequence its lead byte announces (0: not a lead byte). */
static size_t utf8_seq_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF)
        return 3;
    if (c >= 0xF0 && c <= 0xF4)
        return 4;
    return 0;
}

bool receipt_utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_seq_len(u[i]);
        if (n == 0 || i + n > len)
            return false;
        for (size_t j = 1; j < n; j++)
            if ((u[i + j] & 0xC0) != 0x80)
                return false;
        if ((n == 3 && u[i] == 0xE0 && u[i + 1] < 0xA0) ||  /* overlong */
            (n == 3 && u[i] == 0xED && u[i + 1] >= 0xA0) || /* surrogate */
            (n == 4 && u[i] == 0xF0 && u[i + 1] < 0x90) ||  /* overlong */
            (n == 4 && u[i] == 0xF4 && u[i + 1] >= 0x90))   /* past U+10FFFF */
            return false;
        i += n;
    }
    return true;
}

const char *receipt_template(receipt_locale_t locale, receipt_msg_t msg)
{
    assert(locale >= RECEIPT_EN && locale < RECEIPT_LOCALES);
    assert(msg >= MSG_EARN && msg < RECEIPT_MSGS && CATALOGUE[msg][locale] != NULL);
    return CATALOGUE[msg][locale];
}

/* The next piece of a template at *p: an argument ({i}) or the literal text up to the
 * next one. */
static const char *next_piece(const char **p, const char *const *args, size_t n_args, size_t *len)
{
    const char *t = *p;
    if (t[0] == '{' && t[1] >= '0' && t[1] < '0' + RECEIPT_ARGS_MAX && t[2] == '}') {
        size_t i = (size_t)(t[1] - '0');
        const char *a = i < n_args && args[i] != NULL ? args[i] : "";
        *p = t + 3;
        *len = strlen(a);
        return a;
    }
    const char *brace = strchr(t + 1, '{');
    *len = brace != NULL ? (size_t)(brace - t) : strlen(t);
    *p = t + *len;
    return t;
}

size_t receipt_render(receipt_locale_t locale, receipt_msg_t msg, const char *const *args,
                      size_t n_args, char *out, size_t size)
{
    assert(out != NULL && size > 0 && n_args <= RECEIPT_ARGS_MAX);
    const char *p = receipt_template(locale, msg);
    size_t o = 0, full = 0;
    bool cut = false;
    while (*p != '\0') {
        size_t len = 0;
        const char *piece = next_piece(&p, args, n_args, &len);
        full += len;
        if (cut)
            continue;
        size_t take = receipt_utf8_cut(piece, len, size - 1 - o);
        memcpy(out + o, piece, take);
        o += take;
        cut = take < len;
    }
    out[o] = '\0';
    assert(o < size && (cut || o == full));
    return full;
}

const char *receipt_reason(receipt_locale_t locale, int code)
{
    assert(locale >= RECEIPT_EN && locale < RECEIPT_LOCALES);
    for (size_t i = 0; i < REASONS_COUNT; i++)
        if (REASONS[i].code == code)
            return REASONS[i].text[locale];
    return REASONS[REASONS_COUNT - 1].text[locale]; /* 96: a code with no reason is a bug */
}

size_t receipt_decline_prefix(receipt_locale_t locale, int code, char *out, size_t size)
{
    assert(code >= 0 && code < 100);
    char two[12];
    snprintf(two, sizeof two, "%02d", code);
    const char *args[] = {two, ""};
    return receipt_render(locale, MSG_DECLINED, args, 2, out, size);
}
